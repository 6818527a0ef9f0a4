#!/usr/bin/env python
"""Check the built docs site in a real browser.

    python tools/check_docs.py _docs [--shots _docs_check]

Serves the site on 127.0.0.1 and drives headless Chromium (Debian's /usr/bin/chromium, through Playwright) through every
page. Checks that each page loads with no console error and no failed request, and that nothing is requested from outside
the site. Math must render with KaTeX (no raw `$$` or `\\(` left), every image must load (natural width > 0), and
notebook pages must show code cells and their outputs. Every exported name needs its API entry on its page, every
internal link and anchor must resolve, the sidebar must list every page, and search must find an exported name. A
screenshot of each page is saved. The last line is `N passed, N failed`; the exit code is non-zero on any failure.
"""
import argparse, functools, http.server, importlib, sys, threading
from pathlib import Path
from urllib.parse import urldefrag, urlparse

CHROMIUM = '/usr/bin/chromium'
FLAGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-quic',
         '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']

class Results:
    def __init__(self): self.passed = self.failed = 0
    def check(self, ok, what, detail=''):
        if ok: self.passed += 1
        else: self.failed += 1; print(f"FAILED: {what}" + (f": {detail}" if detail else ''))
        return ok

def serve(root):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f'http://127.0.0.1:{httpd.server_address[1]}/'

def notebook_plots():
    "{page: number of image outputs in the notebook behind it}, with nbdev's page names (02_losses.ipynb -> losses.html)"
    import json, re
    res = {}
    for nb in Path('nbs').glob('*.ipynb'):
        cells = json.loads(nb.read_text())['cells']
        n = sum('image/png' in o.get('data', {}) for c in cells if c['cell_type'] == 'code' for o in c.get('outputs', []))
        res[re.sub(r'^\d+_', '', nb.stem) + '.html'] = n
    return res

def expected_api(root):
    "{page: [(name, anchor)]}: every name in each module's __all__, at the page and anchor nbdev's index gives it"
    from miniai._modidx import d
    from fastcore.docments import DocmentTbl
    res = {}
    for mod, syms in d['syms'].items():
        m = importlib.import_module(mod)
        public = set(getattr(m, '__all__', []))
        for qual, (url, _) in syms.items():
            name = qual.rsplit('.', 1)[-1]
            if name in public and qual == f'{mod}.{name}':
                page, _, anchor = url.partition('#')
                try: table = bool(DocmentTbl(getattr(m, name)).has_docment)
                except Exception: table = False
                res.setdefault(page, []).append((name, anchor, table))
    return res

TABLE_JS = """anchor => {
  let el = document.getElementById(anchor);
  if (!el) return false;
  if (el.tagName === 'SECTION') return !!el.querySelector('table');
  for (el = el.nextElementSibling; el && !/^(H1|H2|H3|HR)$/.test(el.tagName); el = el.nextElementSibling)
    if (el.tagName === 'TABLE' || el.querySelector('table')) return true;
  return false;
}"""

PAGE_JS = """() => {
  const main = document.querySelector('main') || document.body;
  const text = main.innerText;
  return {
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
    sidebar: Array.from(document.querySelectorAll('#quarto-sidebar a[href]')).map(a => a.getAttribute('href')),
    mathSpans: document.querySelectorAll('span.math').length,
    mathRendered: Array.from(document.querySelectorAll('span.math')).filter(s => s.querySelector('.katex')).length,
    rawTex: (text.match(/\\$\\$|\\\\\\(|\\\\\\[/g) || []).length,
    images: Array.from(main.querySelectorAll('img')).map(i => ({src: i.src.slice(0, 60), ok: i.complete && i.naturalWidth > 0})),
    codeCells: main.querySelectorAll('div.sourceCode, pre code').length,
    outputs: main.querySelectorAll('.cell-output, .cell-output-display, .cell-output-stdout').length,
    headings: Array.from(main.querySelectorAll('h1,h2,h3,h4')).map(h => ({id: h.id || (h.closest('section') || {}).id || '', text: h.innerText})),
  };
}"""

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('site', help='the built site, e.g. _docs')
    p.add_argument('--shots', default='_docs_check', help='folder for one screenshot per page')
    a = p.parse_args()
    root, shots = Path(a.site).resolve(), Path(a.shots)
    shots.mkdir(parents=True, exist_ok=True)
    pages = sorted(str(f.relative_to(root)) for f in root.rglob('*.html'))
    r = Results()
    if not r.check(len(pages) > 0, 'the site has pages', str(root)): return finish(r)
    api, notebooks = expected_api(root), notebook_plots()
    httpd, base = serve(root)
    from playwright.sync_api import sync_playwright
    seen, links = {}, []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        ctx = browser.new_context(viewport={'width': 1280, 'height': 900})
        for name in pages:
            page, errors, requests, failed = ctx.new_page(), [], [], []
            page.on('console', lambda m, errors=errors: m.type == 'error' and errors.append(m.text))
            page.on('pageerror', lambda e, errors=errors: errors.append(str(e)))
            page.on('request', lambda q, requests=requests: requests.append(q.url))
            page.on('requestfailed', lambda q, failed=failed: failed.append(f'{q.url} ({q.failure})'))
            page.on('response', lambda s, failed=failed: s.status >= 400 and failed.append(f'{s.url} (HTTP {s.status})'))
            resp = page.goto(base + name, wait_until='load')
            page.wait_for_timeout(300)   # KaTeX auto-render runs on DOMContentLoaded; let deferred scripts finish
            info = page.evaluate(PAGE_JS)
            page.screenshot(path=str(shots/(name.replace('/', '_')[:-5] + '.png')), full_page=True)
            r.check(resp is not None and resp.status == 200, f'{name}: loads')
            r.check(not errors, f'{name}: no console errors', '; '.join(errors[:3]))
            r.check(not failed, f'{name}: no failed requests', '; '.join(failed[:6]))
            outside = [u for u in requests if not (u.startswith(base) or u.startswith('data:'))]
            r.check(not outside, f'{name}: no request leaves the site', '; '.join(outside[:3]))
            if info['mathSpans'] or info['rawTex']:
                r.check(info['mathSpans'] > 0 and info['mathRendered'] == info['mathSpans'], f'{name}: math rendered by KaTeX',
                        f"{info['mathRendered']} of {info['mathSpans']} math spans rendered")
            r.check(info['rawTex'] == 0, f'{name}: no raw TeX left', f"{info['rawTex']} raw $$, \\( or \\[")
            bad_imgs = [i['src'] for i in info['images'] if not i['ok']]
            r.check(not bad_imgs, f'{name}: images loaded', '; '.join(bad_imgs[:3]))
            if name in notebooks:
                r.check(info['codeCells'] > 0 and info['outputs'] > 0, f'{name}: code cells and outputs shown',
                        f"{info['codeCells']} code blocks, {info['outputs']} outputs")
                shown = sum(i['ok'] for i in info['images'])
                if notebooks[name]: r.check(shown >= notebooks[name], f'{name}: all {notebooks[name]} plots shown as images', f'{shown} shown')
            ids = set(info['ids']) | {h['id'] for h in info['headings']}
            for sym, anchor, table in api.get(name, []):
                head = next((h for h in info['headings'] if h['id'] == anchor), None)
                if r.check(head is not None and sym in head['text'], f'{name}: API entry for {sym}', f'no heading #{anchor}') and table:
                    r.check(page.evaluate(TABLE_JS, anchor), f'{name}: argument table for {sym}')
            seen[name] = ids
            links += [(name, l) for l in info['links'] if l.startswith(base)]
            if name == 'index.html':
                want = sorted(set(pages) - {'404.html'})
                r.check(sorted(set(h.split('#')[0] for h in info['sidebar'])) == want, 'sidebar lists every page',
                        f"{info['sidebar']} vs {want}")
                box = page.locator('#quarto-search input')
                if r.check(box.count() == 1, 'search box present'):
                    box.fill('cross_entropy'); page.wait_for_timeout(500)
                    hits = page.locator('.smalldocs-search-results a').count()
                    r.check(hits > 0, 'search finds cross_entropy', f'{hits} results')
            page.close()
        browser.close()
    httpd.shutdown()
    for src, url in links:
        target, frag = urldefrag(url)
        path = urlparse(target).path.lstrip('/') or 'index.html'
        if path.endswith('/'): path += 'index.html'
        ok = path in seen or (root/path).is_file()
        if path in seen and frag: ok = frag in seen[path]
        r.check(ok, f'{src}: link to {path}{"#" + frag if frag else ""} resolves')
    print(f"checked {len(pages)} pages and {len(links)} internal links; screenshots in {shots}/")
    return finish(r)

def finish(r):
    print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0

if __name__ == '__main__': sys.exit(main())

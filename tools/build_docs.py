#!/usr/bin/env python
"""Steps of tools/build_docs.sh around `smalldocs render`.

prepare PROC:     name each processed notebook after its `output-file` (the page name Quarto uses, e.g. losses.html),
                  and point the sidebar and the notebooks' links at the new names; give nbdev.yml the site's address.
finish SITE DEST: serve KaTeX and the theme's font from the site (npm's `katex` and `@fontsource/source-sans-pro`,
                  installed once into .docs_cache/), turn links to the site's own published URL (settings.ini's
                  site_url) and root-relative ones into relative ones, refuse any page that still loads from
                  elsewhere, and move the site to DEST.
"""
import json, re, shutil, subprocess, sys
from configparser import ConfigParser
from pathlib import Path

root = Path(__file__).resolve().parent.parent
KATEX_VERSION = '0.16.11'   # the version smalldocs' pages ask for
KATEX_CDN = f'https://cdn.jsdelivr.net/npm/katex@{KATEX_VERSION}/dist/'

def output_name(nb):
    "The `output-file` of a processed notebook's front matter, without .html"
    cells = json.loads(nb.read_text())['cells']
    m = re.search(r'^output-file:\s*(\S+)\.html', ''.join(cells[0]['source']), re.M) if cells and cells[0]['cell_type'] == 'raw' else None
    return m[1] if m else nb.stem

def prepare(proc):
    proc = Path(proc)
    names = {nb.name: output_name(nb) + '.ipynb' for nb in sorted(proc.glob('*.ipynb'))}
    link = re.compile(r'\]\((' + '|'.join(re.escape(n) for n in names) + r')(#[^)]*)?\)')
    for old, new in names.items():
        nb = json.loads((proc/old).read_text())
        for c in nb['cells']:
            if c['cell_type'] == 'markdown':
                c['source'] = link.sub(lambda m: f']({names[m[1]]}{m[2] or ""})', ''.join(c['source']))
        (proc/old).unlink()
        (proc/new).write_text(json.dumps(nb, indent=1))
    # nbdev writes nbdev.yml's site-url from doc_host, which settings.ini leaves empty (see there): give it site_url
    ny = proc/'nbdev.yml'
    ny.write_text(re.sub(r'^(\s*site-url:).*$', lambda m: f'{m[1]} "{site_url().rstrip("/")}"', ny.read_text(), flags=re.M))
    sb = proc/'sidebar.yml'
    text = sb.read_text()
    for old, new in names.items(): text = re.sub(rf'(?<![\w/]){re.escape(old)}\b', new, text)
    sb.write_text(text)
    print('pages:', ', '.join(f'{o} -> {n[:-6]}.html' for o, n in names.items()))

def katex_dist():
    cache = root/'.docs_cache'
    dist = cache/'node_modules'/'katex'/'dist'
    if not (dist/'katex.min.js').exists():
        cache.mkdir(exist_ok=True)
        subprocess.run(['npm', 'install', '--prefix', str(cache), '--no-audit', '--no-fund', '--silent', f'katex@{KATEX_VERSION}'], check=True)
    return dist

FONT = '@fontsource/source-sans-pro@5.2.5'   # the theme's font (it imports it from Google), served from the site
FONT_IMPORT = re.compile(r'@import url\(["\']?https://fonts\.googleapis\.com/css2\?family=Source\+Sans\+Pro[^)]*\);?')

def fonts(site):
    "Copy Source Sans Pro (weights 300, 400, 700) into the site and point the theme's CSS at it"
    dist = root/'.docs_cache'/'node_modules'/'@fontsource'/'source-sans-pro'
    if not (dist/'400.css').exists():
        subprocess.run(['npm', 'install', '--prefix', str(root/'.docs_cache'), '--no-audit', '--no-fund', '--silent', FONT], check=True)
    fd = site/'site_libs'/'fonts'/'source-sans-pro'
    shutil.rmtree(fd, ignore_errors=True)
    shutil.copytree(dist/'files', fd/'files')
    for w in ('300', '400', '700'): shutil.copy(dist/f'{w}.css', fd/f'{w}.css')
    for css in site.rglob('*.css'):
        text = css.read_text()
        if FONT_IMPORT.search(text):
            rel = Path(*(['..'] * (len(css.relative_to(site).parts) - 1))) / 'site_libs' / 'fonts' / 'source-sans-pro'
            text = FONT_IMPORT.sub(''.join(f'@import url({rel.as_posix()}/{w}.css);' for w in ('300', '400', '700')), text)
            css.write_text(text)

def site_url():
    cfg = ConfigParser(delimiters=['=']); cfg.read(root/'settings.ini')
    d = cfg['DEFAULT']
    return d['site_url'].rstrip('/') + '/'

def finish(site, dest):
    site, dest = Path(site), Path(dest)
    dist = katex_dist()
    kd = site/'site_libs'/'katex'
    shutil.rmtree(kd, ignore_errors=True)
    kd.mkdir(parents=True)
    for f in ('katex.min.js', 'katex.min.css'): shutil.copy(dist/f, kd/f)
    (kd/'contrib').mkdir()
    shutil.copy(dist/'contrib'/'auto-render.min.js', kd/'contrib'/'auto-render.min.js')
    shutil.copytree(dist/'fonts', kd/'fonts')
    fonts(site)
    url = site_url()
    bad = [(css.name, m[0]) for css in site.rglob('*.css') for m in re.finditer(r'url\(["\']?(?:https?:)?//[^)]*\)', css.read_text())]
    for page in sorted(site.rglob('*.html')):
        up = '../' * (len(page.relative_to(site).parts) - 1)
        html = page.read_text()
        html = html.replace(KATEX_CDN, f'{up}site_libs/katex/')
        html = html.replace(f'href="{url}', f'href="{up}')
        html = re.sub(r'href="/(?!/)', f'href="{up}', html)   # nbdev's links to this site's own pages, with no doc_host
        for m in re.finditer(r'<link\b[^>]*>', html):
            if re.search(r'rel="(stylesheet|preload|icon|modulepreload)"', m[0]) and re.search(r'href="(https?:)?//', m[0]): bad.append((page.name, m[0][:120]))
        for m in re.finditer(r'<(script|img|iframe|source|video|audio)\b[^>]*\bsrc="((?:https?:)?//[^"]*)"', html, re.I): bad.append((page.name, m[2]))
        page.write_text(html)
    if bad: sys.exit('pages load from outside the site:\n' + '\n'.join(f'  {p}: {u}' for p, u in bad))
    if dest.exists(): shutil.rmtree(dest)
    shutil.move(str(site), str(dest))

if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    {'prepare': prepare, 'finish': finish}[cmd](*args)

#!/usr/bin/env python
"""Check that settings.ini and pyproject.toml describe the same project to both generations of nbdev.

nbdev 2 (and setup.py) read settings.ini. nbdev 3 reads pyproject.toml only: the package's name and the repository's
address from [project], everything else from [tool.nbdev]. It derives doc_host and doc_baseurl from
[project.urls]'s Documentation entry, and writes them into miniai/_modidx.py, as nbdev 2 writes settings.ini's.
The two generations export the same miniai/ only when they see the same values, so this compares nbdev 3's view of
pyproject.toml with nbdev 2's view of settings.ini, key by key, and exits 1 naming each key that differs.

    python tools/check_config.py
"""
import sys
try: import tomllib
except ModuleNotFoundError: sys.exit('tools/check_config.py needs Python 3.11 or later (for tomllib)')
from configparser import ConfigParser
from pathlib import Path
from urllib.parse import urlparse

root = Path(__file__).resolve().parent.parent
# settings.ini keys that only setup.py or this repo's tools read; nbdev 3 takes their like from [project]'s dynamic fields
NOT_NBDEV = set('''repo lib_name version min_python license audience author author_email copyright description keywords
    language status user requirements tensorboard_requirements dev_tools dev_requirements nbdev2_requirements
    console_scripts site_url'''.split())

def nbdev2_view(path=root/'settings.ini'):
    "settings.ini as nbdev 2 reads it: every key, interpolated"
    cfg = ConfigParser(delimiters=['=']); cfg.read(path, encoding='utf-8')
    return dict(cfg['DEFAULT'])

def nbdev3_view(path=root/'pyproject.toml'):
    "pyproject.toml as nbdev 3.3 reads it (nbdev.config.ConfigToml): [tool.nbdev], then what it takes from [project]"
    d = tomllib.loads(path.read_text(encoding='utf-8'))
    proj, res = d.get('project', {}), dict(d.get('tool', {}).get('nbdev', {}))
    urls = proj.get('urls') or {}
    u = urlparse(urls.get('Documentation') or '')
    res.update(lib_name=proj.get('name', ''), git_url=(urls.get('Repository') or urls.get('Source') or '').rstrip('/'),
               doc_host=f'{u.scheme}://{u.netloc}' if u.scheme else '', doc_baseurl=(u.path or '/').rstrip('/') or '/')
    return res

def same(ini:str, toml) -> bool:
    "Whether settings.ini's text `ini` means the TOML value `toml`"
    if isinstance(toml, bool): return ini.strip().lower() in (('true', '1', 'yes', 'y', 'on') if toml else ('false', '0', 'no', 'n', 'off'))
    return ini.strip() == str(toml).strip()

def differences(v2:dict, v3:dict) -> list:
    "One line for each key the two views disagree on, or that one of them lacks"
    keys = (set(v2) - NOT_NBDEV) | set(v3)
    res = []
    for k in sorted(keys):
        if k not in v2: res.append(f'{k}: pyproject.toml has {v3[k]!r}, settings.ini has no {k}')
        elif k not in v3: res.append(f'{k}: settings.ini has {v2[k]!r}, pyproject.toml has no {k} (add it to [tool.nbdev])')
        elif not same(v2[k], v3[k]): res.append(f'{k}: settings.ini has {v2[k]!r}, pyproject.toml gives nbdev 3 {v3[k]!r}')
    return res

if __name__ == '__main__':
    diffs = differences(nbdev2_view(), nbdev3_view())
    if diffs: sys.exit('settings.ini (nbdev 2, setup.py) and pyproject.toml (nbdev 3) disagree:\n' + '\n'.join(f'  {d}' for d in diffs))
    print('settings.ini and pyproject.toml agree on every nbdev setting')

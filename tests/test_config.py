"settings.ini (nbdev 2, setup.py) and pyproject.toml (nbdev 3) must agree: tools/check_config.py says where they don't"
import importlib.util, subprocess, sys
from pathlib import Path
import pytest

pytest.importorskip('tomllib', reason='tools/check_config.py reads pyproject.toml with tomllib (Python 3.11+)')

root = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location('check_config', root/'tools'/'check_config.py')
cc = importlib.util.module_from_spec(spec); spec.loader.exec_module(cc)

def test_the_repo_agrees():
    r = subprocess.run([sys.executable, str(root/'tools'/'check_config.py')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert cc.differences(cc.nbdev2_view(), cc.nbdev3_view()) == []

def test_nbdev3_reads_the_repository_and_no_docs_address():
    v3 = cc.nbdev3_view()
    assert v3['lib_name'] == 'miniai' and v3['lib_path'] == 'miniai'
    assert v3['git_url'] == 'https://github.com/miniai/miniai'
    assert (v3['doc_host'], v3['doc_baseurl']) == ('', '/')

def _copy(tmp_path, ini=lambda s: s, toml=lambda s: s):
    (tmp_path/'settings.ini').write_text(ini((root/'settings.ini').read_text()))
    (tmp_path/'pyproject.toml').write_text(toml((root/'pyproject.toml').read_text()))
    return cc.differences(cc.nbdev2_view(tmp_path/'settings.ini'), cc.nbdev3_view(tmp_path/'pyproject.toml'))

@pytest.mark.parametrize('ini,toml,expect', [
    (lambda s: s.replace('tst_flags = notest slow', 'tst_flags = notest'), None, "tst_flags: settings.ini has 'notest', pyproject.toml gives nbdev 3 'notest slow'"),
    (None, lambda s: s.replace('clean_ids = true', 'clean_ids = false'), "clean_ids: settings.ini has 'True', pyproject.toml gives nbdev 3 False"),
    (lambda s: s.replace('doc_host =\n', 'doc_host = https://example.org\n'), None, "doc_host: settings.ini has 'https://example.org', pyproject.toml gives nbdev 3 ''"),
    (None, lambda s: s.replace('Repository = "https://github.com/miniai/miniai"', 'Repository = "https://github.com/other/miniai"'),
     "git_url: settings.ini has 'https://github.com/miniai/miniai', pyproject.toml gives nbdev 3 'https://github.com/other/miniai'"),
    (None, lambda s: s.replace('name = "miniai"', 'name = "miniai2"'), "lib_name: settings.ini has 'miniai', pyproject.toml gives nbdev 3 'miniai2'"),
    (None, lambda s: s.replace('cell_number = true\n', ''), "cell_number: settings.ini has 'True', pyproject.toml has no cell_number (add it to [tool.nbdev])"),
    (lambda s: s.replace('black_formatting = False\n', ''), None, "black_formatting: pyproject.toml has False, settings.ini has no black_formatting"),
])
def test_a_difference_is_named(tmp_path, ini, toml, expect):
    assert _copy(tmp_path, ini or (lambda s: s), toml or (lambda s: s)) == [expect]

def test_a_documentation_url_would_split_the_generations(tmp_path):
    "With a Documentation entry nbdev 3 would see a docs host that settings.ini must then carry too"
    diffs = _copy(tmp_path, toml=lambda s: s.replace('[project.urls]\n', '[project.urls]\nDocumentation = "https://miniai.github.io/miniai"\n'))
    assert diffs == ["doc_baseurl: settings.ini has '/', pyproject.toml gives nbdev 3 '/miniai'",
                     "doc_host: settings.ini has '', pyproject.toml gives nbdev 3 'https://miniai.github.io'"]

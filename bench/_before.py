"A module of miniai as an earlier commit had it, for the benchmarks that compare against it."
import importlib.util, subprocess
from pathlib import Path

def module_before(rev:str, name:str): # e.g. module_before('0511426', 'training')
    "`miniai.<name>` as commit `rev` had it, run inside today's package (its relative imports get today's modules); None when git cannot show it"
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(['git', '-C', str(root), 'show', f'{rev}:miniai/{name}.py'], capture_output=True, text=True)
    if r.returncode: return None
    spec = importlib.util.spec_from_loader(f'miniai._{name}_before', loader=None)
    mod = importlib.util.module_from_spec(spec); mod.__package__ = 'miniai'
    exec(compile(r.stdout, f'{rev}:miniai/{name}.py', 'exec'), mod.__dict__)
    return mod

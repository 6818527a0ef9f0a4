"The lessons (notebooks 00 to 09; the appendix, 10, is exempt) stay lessons: the limits of issue 44, counted as the before-stop hook counts them"
import json, re
from pathlib import Path
import pytest

LESSONS = sorted((Path(__file__).resolve().parent.parent/'nbs').glob('0[0-9]_*.ipynb'))
CELL_WORDS, LESSON_WORDS = 300, 2000
HASH = re.compile(r'\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b') # 7 to 40 hex digits, letters and digits both
VERDICT = re.compile(r'\b(not met|NOT met)\b|: met\b') # a benchmark's verdict on its targets

def words(md:str)->int:
    "Words of a markdown cell's prose: code fences do not count"
    return len(re.sub(r'```.*?```', ' ', md, flags=re.S).split())

def markdown(nb:Path)->list:
    "(index, text) of each markdown cell of the notebook `nb`"
    return [(i, ''.join(c['source'])) for i, c in enumerate(json.loads(nb.read_text())['cells']) if c['cell_type'] == 'markdown']

def problems(cells:list)->list:
    "What breaks the limits in the markdown `cells` of one lesson, one line per problem, naming the cell"
    out = [f"cell {i}: {words(t)} words (at most {CELL_WORDS})" for i, t in cells if words(t) > CELL_WORDS]
    out += [f"cell {i}: commit hash {h}" for i, t in cells for h in HASH.findall(t)]
    out += [f"cell {i}: a bench verdict ({m.group(0)!r})" for i, t in cells for m in VERDICT.finditer(t)]
    if (tot := sum(words(t) for _, t in cells)) > LESSON_WORDS: out.append(f"{tot} words of prose (at most {LESSON_WORDS})")
    return out

def test_the_lessons_are_found():
    assert [p.name[:2] for p in LESSONS] == [f"{i:02d}" for i in range(len(LESSONS))] and len(LESSONS) >= 10

def test_the_count_sees_each_limit():
    fence = "```python\n" + "x " * 400 + "\n```"
    assert words(f"one two {fence} three") == 3
    assert problems([(0, "word " * 301)]) == ["cell 0: 301 words (at most 300)"]
    assert problems([(i, "word " * 300) for i in range(7)]) == ["2100 words of prose (at most 2000)"]
    assert problems([(3, "fit as commit bb2e292 had it")]) == ["cell 3: commit hash bb2e292"]
    assert problems([(0, "a seed of 1234567 and the word facade, defaced")]) == [] # digits alone or letters alone are no hash
    assert problems([(1, "targets: met")]) == ["cell 1: a bench verdict (': met')"]
    assert problems([(1, "targets NOT met")]) == ["cell 1: a bench verdict ('NOT met')"]
    assert problems([(1, "the two lines met at a point; we met the target")]) == []

@pytest.mark.parametrize('nb', LESSONS, ids=lambda p: p.stem)
def test_lesson_within_limits(nb):
    assert not (found := problems(markdown(nb))), f"{nb.name}: " + '; '.join(found)

"""Real text from installed packages: first sentences of public docstrings, labelled by package."""
import importlib, inspect, random, re, sys
import pandas as pd
rows = []
for pkg, mods in {"numpy": ["numpy", "numpy.linalg", "numpy.random", "numpy.fft", "numpy.ma"],
                  "scipy": ["scipy.stats", "scipy.signal", "scipy.linalg", "scipy.special", "scipy.optimize", "scipy.sparse", "scipy.interpolate", "scipy.ndimage"],
                  "pandas": ["pandas", "pandas.DataFrame", "pandas.Series", "pandas.Index", "pandas.api.types"],
                  "torch": ["torch", "torch.nn.functional", "torch.Tensor", "torch.linalg", "torch.nn"]}.items():
    seen = set()
    for m in mods:
        base = m.split(".")
        try:
            obj = importlib.import_module(m)
        except ImportError:
            obj = getattr(importlib.import_module(".".join(base[:-1])), base[-1])
        for name in dir(obj):
            if name.startswith("_"):
                continue
            try:
                doc = inspect.getdoc(getattr(obj, name))
            except Exception:
                continue
            if not doc:
                continue
            first = re.split(r"\n\s*\n", doc.strip())[0].replace("\n", " ")
            if len(first) < 20 or first in seen or first.startswith(name + "("):
                continue
            seen.add(first)
            rows.append((first[:300], pkg))
random.Random(0).shuffle(rows)
df = pd.DataFrame(rows, columns=["text", "label"])
print(df.label.value_counts(), len(df))
df.to_csv(sys.argv[1], index=False)

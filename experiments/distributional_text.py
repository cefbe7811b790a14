"""Distributional unlearning on text: SMS spam (paper 002, Sec. 4.3, App. B.4).

Usage::

    python experiments/distributional_text.py --config sms --sms-path SMSSpamCollection
    python experiments/distributional_text.py --config synthetic --workdir runs/dt_syn
    python experiments/distributional_text.py --config smoke --workdir /tmp/dt

Configs (``get_config(name)``):

* ``sms`` (default): the UCI SMS Spam Collection (5574 messages, 13.4% spam),
  10 seeds, deletions 0..100% of the train spam in 5-point steps. The file is
  never downloaded: pass ``--sms-path`` (see :data:`SMS_HINT`).
* ``synthetic``: a generated corpus (:func:`generate_corpus`; 1500 ham / 250
  spam, a fifth of the spam written "ham-like"), 5 seeds; a minute or two.
* ``smoke``: a tiny generated corpus, 2 seeds, five fractions; seconds.

Protocol (docs/methods_notes.md), per seed: a stratified 20% test split; TF-IDF
(``max_features=20000``, 1-2-grams, English stop words) fit on the train part;
every train spam message (P1; ham is P2) is scored by ``cos_mu2``, ``lr_cos``,
``knn_ratio`` (k = 10, dense TF-IDF rows), ``norm`` ("tfidf-norm") and
``random`` from :mod:`jaxunlearn.select`; the top fraction is deleted with
:func:`jaxunlearn.select.edit_dataset`; an L2 logistic regression
(``max_iter=1000``) is retrained on the edited train set and evaluated on the
test split: recall of spam, F1 of the ham class, macro-F1, accuracy on the
ham test rows. Finished seeds are kept in ``workdir/rows`` (the harness's
resume rule: a seed's row is reused while every config field but ``seeds`` /
``sms_path``, the corpus digest and the package versions are unchanged); the
report gives the smallest deletion that halves spam recall
per score next to the paper's Table 2.
"""

import dataclasses
import functools
import hashlib
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import eval as ev
from jaxunlearn import harness, select
from jaxunlearn.harness import Claim, fmt

SMS_URL = "https://archive.ics.uci.edu/dataset/228/sms+spam+collection"
SMS_HINT = (
    "The 'sms' config needs the UCI SMS Spam Collection, which this script never"
    f" downloads. Get it from {SMS_URL} (unzip it; the file is 'SMSSpamCollection',"
    " tab-separated 'ham|spam<TAB>text' lines) and pass --sms-path"
    " /path/to/SMSSpamCollection. Without it, run --config synthetic."
)

# Paper 002, Table 2 and Sec. 4.3 (SMS Spam): % of the spam deleted to reach the
# (stripped) recall target, "reducing ... recall on the forget distribution by at
# least half". Only random, the best selective rule and lr-cos are given.
PAPER = {
    "table2_sms": {"random": 90, "selective_best": 75, "saving_pct": 17},
    "text_sms": {"lr_cos": 70, "random": 90},
    "seeds": 10,
    "data": "UCI SMS Spam Collection, 5574 messages, 13.4% spam",
}

SCORE_LABELS = {
    "cos_mu2": "cos-mu2",
    "lr_cos": "lr-cos",
    "knn_ratio": "knn-ratio",
    "norm": "tfidf-norm",
    "random": "random",
}
METRICS = ("recall_spam", "f1_ham", "macro_f1", "acc_ham")
REPORT_FRACTIONS = (0.0, 0.25, 0.5, 0.7, 0.75, 0.9, 0.95, 1.0)


@dataclasses.dataclass
class Config:
    dataset: str = "sms"  # "sms" | "synthetic"
    sms_path: str | None = None
    # generated corpus (dataset="synthetic")
    n_ham: int = 1500
    n_spam: int = 250
    hamlike_frac: float = 0.2
    corpus_seed: int = 0
    # features (paper App. B.4)
    max_features: int = 20000
    ngram_range: tuple[int, int] = (1, 2)
    stop_words: str | None = "english"
    test_size: float = 0.2
    # deletion
    scores: tuple[str, ...] = ("cos_mu2", "lr_cos", "knn_ratio", "norm", "random")
    fractions: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
    knn_k: int = 10
    knn_chunk_size: int = 256
    # model
    lr_c: float = 1.0
    lr_max_iter: int = 1000
    seeds: tuple[int, ...] = tuple(range(10))
    # targets: "halved" recall, and random's recall at the paper's 90% budget
    target_ratio: float = 0.5
    paper_random_budget: float = 0.9
    # identical kept sets within a seed (every score at 0% and 100%) are fit
    # once; the fit is deterministic, so this changes no number
    reuse_identical_edits: bool = True


def get_config(name: str = "sms") -> Config:
    if name == "sms":
        return Config()
    if name == "synthetic":
        return Config(dataset="synthetic", seeds=tuple(range(5)))
    if name == "smoke":
        return Config(
            dataset="synthetic",
            n_ham=400,
            n_spam=100,
            seeds=(0, 1),
            fractions=(0.0, 0.25, 0.5, 0.75, 1.0),
        )
    raise ValueError(f"unknown config {name!r}; valid: sms, synthetic, smoke.")


# --------------------------------------------------------------------------- #
# Data.
# --------------------------------------------------------------------------- #


class MissingDataError(FileNotFoundError):
    """The SMS Spam Collection file is not available locally."""


def load_sms(path: str | None) -> tuple[list[str], np.ndarray]:
    """Reads ``SMSSpamCollection`` (``label<TAB>text`` lines); spam = 1."""
    if not path:
        raise MissingDataError(f"no --sms-path given. {SMS_HINT}")
    if not os.path.isfile(path):
        raise MissingDataError(f"{path!r} does not exist. {SMS_HINT}")
    texts, labels = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            label, sep, text = line.partition("\t")
            if not sep or label not in ("ham", "spam"):
                raise ValueError(
                    f"{path}:{i}: expected 'ham|spam<TAB>text', got {line[:60]!r}."
                    f" {SMS_HINT}"
                )
            texts.append(text)
            labels.append(int(label == "spam"))
    return texts, np.asarray(labels, np.int64)


# Word lists of the generated corpus. Ham and spam draw mostly from their own
# list, both from SHARED, and ham rarely from the spam list; typical spam comes
# in four topics and carries formulaic phrases (as real spam does), while
# "ham-like" spam reads like ham with a few promotional words, so that which
# spam is deleted matters.
HAM_WORDS = (
    "home dinner tonight meet later love work sorry lunch class mum dad bus train"
    " late sleep movie party weekend morning office study exam coffee friend"
    " birthday gym shopping pick car ready tired nice good happy day night soon"
    " wait thanks dear baby honey miss talk lol haha ok sure yeah cool leaving"
    " reached room house cook pizza tea watch match game lecture project boss"
    " meeting doctor sister brother aunt hospital church holiday trip beach"
    " rain cold hungry bored driving walking park library dog cat kids school"
).split()
SHARED_WORDS = (
    "phone number today message send text new time week money tomorrow pls"
    " know want need reply line chat mobile contact details hey hope free"
).split()
SPAM_WORDS = (
    "win winner claim urgent guaranteed txt stop offer bonus selected"
    " congratulations entry apply unsubscribe valid expires customer service"
    " landline pobox optout rate cost 150p 18 tc"
).split()
SPAM_TOPICS = (
    "prize cash award draw 1000 500 holiday voucher tickets lucky".split(),
    "ringtone tone polyphonic logo video nokia download games music club".split(),
    "dating singles hot sexy local meet girls flirt private photo".split(),
    "loan credit debt insurance refund accident compensation mortgage bank".split(),
)
HAM_PHRASES = (
    "see you later",
    "on my way",
    "call me when you are free",
    "sorry i will call later",
    "what time is dinner",
    "love you miss you",
    "text me when you reach home",
)
SPAM_PHRASES = (
    "txt stop to optout",
    "claim your reward now",
    "free entry into our weekly competition",
    "reply yes to receive",
    "valid 12hrs only",
    "t c apply 18 only",
    "call our customer service line",
)
TOPIC_PHRASES = (
    ("you have won a guaranteed cash prize", "claim your holiday voucher"),
    ("get your free polyphonic ringtone", "download the latest nokia games"),
    ("meet hot local singles tonight", "private photo waiting for you"),
    ("you may be entitled to compensation", "low rate loan approved"),
)
# (ham, shared, generic spam, topic) word mixtures, token-count ranges, and the
# chance of a phrase / phone number
HAM_MIX, HAM_LEN, HAM_PHRASE = (0.75, 0.245, 0.005, 0.0), (3, 15), 0.3
SPAM_MIX, SPAM_LEN = (0.05, 0.15, 0.40, 0.40), (4, 12)
HAMLIKE_MIX, HAMLIKE_LEN = (0.55, 0.30, 0.10, 0.05), (8, 22)
HAMLIKE_PHRASE, PHONE_PROB, SPAM_PHRASES_N = 0.4, 0.6, (2, 5)


def _zipf(n):
    w = 1.0 / (np.arange(n) + 2.0)
    return w / w.sum()


def generate_corpus(
    n_ham: int = 1500, n_spam: int = 250, hamlike_frac: float = 0.2, seed: int = 0
) -> tuple[list[str], np.ndarray]:
    """A deterministic SMS-like corpus: ``(texts, labels)`` with spam = 1.

    Ham: 3-15 tokens, ham words 75% / shared 24.5% / spam 0.5%, and a ham
    phrase 30% of the time. Typical spam (``1 - hamlike_frac`` of it): one of
    four topics, 4-12 tokens, ham 5% / shared 15% / generic spam 40% / topic
    40%, two to four spam phrases (generic or of its topic) and, 60% of the
    time, a phone number. Ham-like spam: 8-22 tokens, ham 55% / shared 30% /
    spam 10% / topic 5%, a spam phrase 40% of the time. Words within a list are
    Zipf-distributed. Same arguments, same corpus.
    """
    if n_ham < 1 or n_spam < 1:
        raise ValueError("need at least one ham and one spam message.")
    rng = np.random.default_rng(seed)
    lists = [HAM_WORDS, SHARED_WORDS, SPAM_WORDS]
    probs = [_zipf(len(w)) for w in lists]
    topic_probs = [_zipf(len(t)) for t in SPAM_TOPICS]

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    def message(mix, length, topic, phrases):
        n = int(rng.integers(length[0], length[1] + 1))
        words = []
        for s in rng.choice(4, size=n, p=mix):
            if s < 3:
                words.append(lists[s][rng.choice(len(lists[s]), p=probs[s])])
            else:
                t = SPAM_TOPICS[topic]
                words.append(t[rng.choice(len(t), p=topic_probs[topic])])
        for phrase in phrases:
            words.insert(int(rng.integers(0, len(words) + 1)), phrase)
        return " ".join(words)

    texts, labels = [], []
    for _ in range(n_ham):
        extra = [pick(HAM_PHRASES)] if rng.random() < HAM_PHRASE else []
        texts.append(message(HAM_MIX, HAM_LEN, 0, extra))
        labels.append(0)
    n_hamlike = int(round(hamlike_frac * n_spam))
    for i in range(n_spam):
        topic = int(rng.integers(len(SPAM_TOPICS)))
        if i < n_hamlike:
            extra = [pick(SPAM_PHRASES)] if rng.random() < HAMLIKE_PHRASE else []
            texts.append(message(HAMLIKE_MIX, HAMLIKE_LEN, topic, extra))
        else:
            pool = SPAM_PHRASES + TOPIC_PHRASES[topic]
            extra = [pick(pool) for _ in range(int(rng.integers(*SPAM_PHRASES_N)))]
            if rng.random() < PHONE_PROB:
                extra.append(f"call 0{rng.integers(10**9):09d}")
            texts.append(message(SPAM_MIX, SPAM_LEN, topic, extra))
        labels.append(1)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], np.asarray(labels, np.int64)[order]


def load_corpus(cfg: Config) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """The corpus of the config and a description (with a content digest)."""
    if cfg.dataset == "sms":
        texts, labels = load_sms(cfg.sms_path)
        source = f"UCI SMS Spam Collection ({cfg.sms_path})"
        synthetic = False
    elif cfg.dataset == "synthetic":
        texts, labels = generate_corpus(
            cfg.n_ham, cfg.n_spam, cfg.hamlike_frac, cfg.corpus_seed
        )
        source = (
            f"GENERATED corpus (generate_corpus: {cfg.n_ham} ham / {cfg.n_spam} spam,"
            f" ham-like spam fraction {cfg.hamlike_frac}, seed {cfg.corpus_seed})"
        )
        synthetic = True
    else:
        raise ValueError(f"dataset must be 'sms' or 'synthetic', got {cfg.dataset!r}.")
    if len(np.unique(labels)) != 2:
        raise ValueError("the corpus must contain both ham and spam messages.")
    h = hashlib.sha256()
    for t, y in zip(texts, labels, strict=True):
        h.update(f"{int(y)}\t{t}\n".encode())
    info = {
        "source": source,
        "synthetic": synthetic,
        "num_messages": len(texts),
        "num_spam": int(labels.sum()),
        "spam_fraction": float(labels.mean()),
        "sha256": h.hexdigest(),
    }
    return texts, labels, info


# --------------------------------------------------------------------------- #
# One seed.
# --------------------------------------------------------------------------- #


def _features(cfg, train_texts, test_texts):
    """L2-normalised TF-IDF (exactly TfidfVectorizer's default output) and the
    un-normalised TF-IDF of the train rows (for the ``norm`` score)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    vec = TfidfVectorizer(
        max_features=cfg.max_features,
        ngram_range=tuple(cfg.ngram_range),
        stop_words=cfg.stop_words,
        norm=None,
    )
    raw_train = vec.fit_transform(train_texts)
    x_train = normalize(raw_train)
    x_test = normalize(vec.transform(test_texts))
    return x_train, x_test, raw_train, len(vec.vocabulary_)


def _dense(x):
    return jnp.asarray(x.toarray(), jnp.float32)


def compute_scores(cfg, x_train, raw_train, y_train, seed):
    """``{score: [N_spam_train] scores}`` (higher = delete first) and the
    train indices of the spam messages they are aligned with."""
    spam = np.flatnonzero(y_train == 1)
    ham = np.flatnonzero(y_train == 0)
    xs = _dense(x_train[spam])
    mu1 = jnp.asarray(np.asarray(x_train[spam].mean(axis=0)).ravel(), jnp.float32)
    mu2 = jnp.asarray(np.asarray(x_train[ham].mean(axis=0)).ravel(), jnp.float32)
    out = {}
    for name in cfg.scores:
        if name == "cos_mu2":
            s = select.cos_mu2(xs, mu2)
        elif name == "lr_cos":
            s = select.lr_cos(xs, mu1, mu2)
        elif name == "knn_ratio":
            # the only score that needs P2 densified: [N_ham, vocab] float32
            s = select.knn_ratio(
                xs,
                xs,
                _dense(x_train[ham]),
                k=cfg.knn_k,
                chunk_size=cfg.knn_chunk_size,
            )
        elif name == "norm":
            # ||x|| of the un-normalised TF-IDF row ("tfidf-norm", roughly the
            # message length); on the L2-normalised rows it would be 1 for all.
            s = select.norm(_dense(raw_train[spam]))
        elif name == "random":
            s = select.random(jax.random.key(seed), spam.size)
        else:
            raise ValueError(f"unknown score {name!r}; valid: {list(SCORE_LABELS)}.")
        s = np.asarray(s, np.float64)
        if not np.all(np.isfinite(s)):
            raise FloatingPointError(f"score {name} is not finite for seed {seed}.")
        out[name] = s
    return out, spam


def fit_and_evaluate(cfg, x_train, y_train, x_test, y_test) -> dict[str, Any]:
    """Logistic regression on the (edited) train set; metrics on the test set.

    With no spam left the classifier cannot be fit (one class); the model is
    then the constant "ham" predictor, so spam recall is 0.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, recall_score

    t0 = time.perf_counter()
    classes = np.unique(y_train)
    if classes.size == 1:
        pred = np.full_like(y_test, classes[0])
        single = True
    else:
        clf = LogisticRegression(C=cfg.lr_c, max_iter=cfg.lr_max_iter)
        clf.fit(x_train, y_train)
        pred = clf.predict(x_test)
        single = False
    ham = y_test == 0
    return {
        "recall_spam": float(recall_score(y_test, pred, pos_label=1, zero_division=0)),
        "f1_ham": float(
            f1_score(y_test, pred, pos_label=0, average="binary", zero_division=0)
        ),
        "macro_f1": float(
            f1_score(y_test, pred, labels=[0, 1], average="macro", zero_division=0)
        ),
        "acc_ham": float(np.mean(pred[ham] == 0)),
        "single_class": single,
        "fit_time": time.perf_counter() - t0,
    }


def run_seed(cfg, texts, labels, seed, *, log=print) -> list[dict[str, Any]]:
    from sklearn.model_selection import train_test_split

    t0 = time.perf_counter()
    idx_train, idx_test = train_test_split(
        np.arange(len(texts)),
        test_size=cfg.test_size,
        stratify=labels,
        random_state=seed,
    )
    y_train, y_test = labels[idx_train], labels[idx_test]
    x_train, x_test, raw_train, vocab = _features(
        cfg, [texts[i] for i in idx_train], [texts[i] for i in idx_test]
    )
    t_feat = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, spam = compute_scores(cfg, x_train, raw_train, y_train, seed)
    t_score = time.perf_counter() - t0
    fitted: dict[str, dict] = {}
    rows = []
    for name in cfg.scores:
        for fraction in cfg.fractions:
            budget = select.budget_from_fraction(fraction, spam.size)
            kept, manifest = select.edit_dataset(
                len(y_train), spam, scores[name], budget, score_name=name
            )
            key = manifest["kept_sha256"]
            if cfg.reuse_identical_edits and key in fitted:
                res = {**fitted[key], "fit_time": 0.0, "reused": True}
            else:
                res = fit_and_evaluate(
                    cfg, x_train[kept], y_train[kept], x_test, y_test
                )
                res["reused"] = False
                fitted[key] = res
            rows.append(
                {
                    "seed": seed,
                    "score": name,
                    "fraction": float(fraction),
                    "budget": budget,
                    "spam_train": int(spam.size),
                    "removed": manifest["removed_count"],
                    "train_size": manifest["kept_count"],
                    "test_size": int(y_test.size),
                    "test_spam": int(y_test.sum()),
                    "vocab": vocab,
                    "kept_sha256": key,
                    **res,
                }
            )
    fit_total = sum(r["fit_time"] for r in rows)
    log(
        f"[dt] seed {seed}: {spam.size} train spam, vocab {vocab}; features"
        f" {t_feat:.1f}s, scores {t_score:.1f}s, fits {fit_total:.1f}s"
    )
    return rows


# --------------------------------------------------------------------------- #
# Driver.
# --------------------------------------------------------------------------- #


def run(cfg: Config, workdir: str, *, log=print) -> dict[str, Any]:
    t_start = time.perf_counter()
    texts, labels, data_info = load_corpus(cfg)
    rd = harness.RunDir(workdir, cfg, extra_versions={"sklearn": _sklearn_version()})
    log(
        f"[dt] {data_info['source']}: {data_info['num_messages']} messages,"
        f" {100 * data_info['spam_fraction']:.1f}% spam"
    )

    def compute(seed):
        t0 = time.perf_counter()
        seed_rows = run_seed(cfg, texts, labels, seed, log=log)
        return {"rows": seed_rows, "seconds": time.perf_counter() - t0}

    rows: list[dict[str, Any]] = []
    seed_seconds: dict[int, float] = {}
    for seed in cfg.seeds:
        fields = rd.fields(
            exclude=("seeds", "sms_path"), seed=seed, data=data_info["sha256"]
        )
        done = rd.row(f"seed{seed}", fields, functools.partial(compute, seed))
        rows += done["rows"]
        seed_seconds[seed] = float(done["seconds"])
    reused_seeds = [s for s in cfg.seeds if f"seed{s}" in rd.resumed]
    for seed in reused_seeds:
        log(f"[dt] seed {seed}: reused rows/seed{seed}.json")
    timing = {
        "this_run_s": time.perf_counter() - t_start,
        "seed_s": seed_seconds,
        "seeds_total_s": float(sum(seed_seconds.values())),
    }
    return _report(cfg, rd, rows, data_info, reused_seeds, timing, t_start)


def _aggregate(rows, cfg):
    out = []
    for name in cfg.scores:
        for f in cfg.fractions:
            rs = [r for r in rows if r["score"] == name and r["fraction"] == float(f)]
            if not rs:
                continue
            stats = ev.aggregate(
                [{m: r[m] for m in (*METRICS, "removed")} for r in rs],
                n_resamples=1000,
            )
            for s in stats.values():
                s["sem"] = s["std"] / np.sqrt(s["n"]) if s["n"] > 1 else float("nan")
            out.append({"score": name, "fraction": float(f), **stats})
    return out


def _first_below(fractions, values, threshold):
    for f, v in zip(fractions, values, strict=True):
        if v <= threshold + 1e-12:
            return float(f)
    return None


def _saving(f, f_random):
    if f is None or f_random is None or f_random == 0:
        return None
    return 1.0 - f / f_random


def _targets(cfg, agg, rows):
    """Smallest deletion fraction reaching each recall target, per score."""
    fr = sorted(float(f) for f in cfg.fractions)
    curve = {
        name: [
            next(
                a["recall_spam"]["mean"]
                for a in agg
                if a["score"] == name and a["fraction"] == f
            )
            for f in fr
        ]
        for name in cfg.scores
    }
    base = float(np.mean([r["recall_spam"] for r in rows if r["fraction"] == fr[0]]))
    half = cfg.target_ratio * base
    out = {
        "baseline_fraction": fr[0],
        "baseline_recall": base,
        "half": {"threshold": half, "fraction": {}, "saving_vs_random": {}},
        "per_seed_half": {},
    }
    for name in cfg.scores:
        out["half"]["fraction"][name] = _first_below(fr, curve[name], half)
    # Paper-implied target: random "does not cross that threshold until 90%",
    # so take random's mean recall at 90% as the (stripped) threshold.
    pb = float(cfg.paper_random_budget)
    if "random" in cfg.scores and pb in fr:
        thr = curve["random"][fr.index(pb)]
        out["paper_implied"] = {
            "threshold": thr,
            "definition": f"mean recall(spam) of random at {100 * pb:.0f}% deletion",
            "fraction": {n: _first_below(fr, curve[n], thr) for n in cfg.scores},
            "saving_vs_random": {},
        }
    for t in ("half", "paper_implied"):
        if t in out and "random" in cfg.scores:
            fr_r = out[t]["fraction"]["random"]
            out[t]["saving_vs_random"] = {
                n: _saving(out[t]["fraction"][n], fr_r) for n in cfg.scores
            }
    # per seed: each seed's own baseline and curve
    for name in cfg.scores:
        vals = []
        for seed in cfg.seeds:
            rs = {
                r["fraction"]: r["recall_spam"]
                for r in rows
                if r["seed"] == seed and r["score"] == name
            }
            if fr[0] not in rs:
                continue
            f = _first_below(fr, [rs[x] for x in fr], cfg.target_ratio * rs[fr[0]])
            vals.append(np.nan if f is None else f)
        v = np.asarray(vals, float)
        out["per_seed_half"][name] = {
            "fractions": [None if np.isnan(x) else float(x) for x in v],
            "mean": float(np.nanmean(v)) if np.any(~np.isnan(v)) else None,
            "std": float(np.nanstd(v, ddof=1)) if np.sum(~np.isnan(v)) > 1 else None,
        }
    return out


_pct = functools.partial(fmt, spec=".0f", scale=100, suffix="%")


def _report(cfg, rd, rows, data_info, reused_seeds, timing, t_start):
    agg = _aggregate(rows, cfg)
    targets = _targets(cfg, agg, rows)
    by = {(a["score"], a["fraction"]): a for a in agg}
    fr = sorted(float(f) for f in cfg.fractions)
    rep_fr = [f for f in REPORT_FRACTIONS if f in fr] or fr
    # ham utility: spread of F1(ham) across scores, fractions below 100%
    spread = max(
        (
            max(by[(n, f)]["f1_ham"]["mean"] for n in cfg.scores)
            - min(by[(n, f)]["f1_ham"]["mean"] for n in cfg.scores)
            for f in fr
            if f < 1.0
        ),
        default=float("nan"),
    )
    synthetic = data_info["synthetic"]
    base_rows = [r for r in rows if r["fraction"] == fr[0]]
    vocab = float(np.mean([r["vocab"] for r in base_rows]))
    n_ham_train = float(
        np.mean([r["train_size"] - r["spam_train"] + r["removed"] for r in rows])
    )
    dense_mb = vocab * n_ham_train * 4 / 2**20
    lines = ["# Distributional unlearning on text: SMS spam (paper 002, Sec. 4.3)", ""]
    if synthetic:
        lines += [
            "> **The data here are SYNTHETIC**: a generated corpus, not the UCI SMS"
            " Spam Collection. The numbers test the pipeline and the relative"
            " behaviour of the scores; they are not a reproduction of the paper's"
            " SMS results. Run `--config sms --sms-path SMSSpamCollection` for that"
            f" (file from {SMS_URL}).",
            "",
        ]
    lines += [
        f"Data: {data_info['source']}; {data_info['num_messages']} messages,"
        f" {data_info['num_spam']} spam ({100 * data_info['spam_fraction']:.1f}%);"
        f" sha256 {data_info['sha256'][:16]}.",
        "",
        f"Protocol: seeds {list(cfg.seeds)}; per seed a stratified"
        f" {100 * cfg.test_size:.0f}% test split; TF-IDF (max_features"
        f" {cfg.max_features}, ngrams {tuple(cfg.ngram_range)}, stop words"
        f" {cfg.stop_words!r}) fit on the train part; the train spam (P1) scored"
        " against the train ham (P2); the top fraction of the train spam deleted"
        f" (fractions {', '.join(_pct(f) for f in fr)}); LogisticRegression(C="
        f"{cfg.lr_c}, L2, max_iter={cfg.lr_max_iter}) retrained on the edited"
        " train set.",
        "",
        "Choices (the paper's text leaves them open):",
        "",
        f"- knn-ratio: k = {cfg.knn_k} (not stated in the paper), on the dense"
        " L2-normalised TF-IDF rows of spam vs ham (the full vocabulary, no"
        f" dimension cap; mean vocabulary {vocab:.0f} features, so the densified"
        f" train ham is ~{dense_mb:.0f} MB in float32); the density is normalised"
        " in that many dimensions, so the score is essentially the log-ratio of"
        " the k-th-neighbour distances.",
        "- tfidf-norm: the L2 norm of the *un-normalised* TF-IDF row (same"
        " vocabulary and idf); sklearn's default rows all have norm 1, which would"
        " make the score a constant.",
        "- cos-mu2 / lr-cos: means of the L2-normalised TF-IDF rows (the model's"
        " features), computed from the sparse matrix.",
        "- Metrics on the held-out test split: recall(spam); F1 of the ham class"
        " (paper App. B.4 'F1@ham'); macro-F1 over both classes; acc(ham) ="
        " fraction of ham test messages predicted ham. The paper's 'macro-F1 on"
        " P2' computed on ham-only rows is degenerate (one true class), so it is"
        " not reported.",
        "- 100% deletion leaves one class: the model is the constant ham"
        " predictor (recall(spam) = 0, F1(spam) = 0 in the macro average).",
        f"- Target: recall(spam) <= {cfg.target_ratio:g} x the no-deletion recall"
        " (Table 2: 'reducing ... recall on the forget distribution by at least"
        " half'); the paper's exact threshold is stripped. Second target"
        " ('paper-implied'): random's mean recall at"
        f" {100 * cfg.paper_random_budget:.0f}%, since the paper says random"
        " first crosses the threshold there.",
        "- Bands in the figure and ± in the tables are the std over seeds (the"
        " paper reports the standard error; `sem` is in results.json).",
        "",
        "## Deletion needed to reach the recall target",
        "",
        f"No-deletion recall(spam) {targets['baseline_recall']:.3f}; half of it"
        f" = {targets['half']['threshold']:.3f}.",
        "",
        "| score | halve recall (mean curve) | saving vs random |"
        " per-seed mean ± std | paper-implied target | saving | paper (SMS) |",
        "|---|---|---|---|---|---|---|",
    ]
    paper_col = {
        "random": "90% (Table 2)",
        "lr_cos": "70% (text); best selective 75% (Table 2), saving 17%",
    }
    pi = targets.get("paper_implied")
    for n in cfg.scores:
        ps = targets["per_seed_half"][n]
        ps_txt = (
            "-"
            if ps["mean"] is None
            else f"{100 * ps['mean']:.0f}%"
            + (f" ± {100 * ps['std']:.0f}" if ps["std"] is not None else "")
        )
        sv = targets["half"]["saving_vs_random"].get(n)
        pi_cols = (
            f" {_pct(pi['fraction'][n])} | {_pct(pi['saving_vs_random'].get(n))} |"
            if pi
            else " - | - |"
        )
        lines.append(
            f"| {SCORE_LABELS.get(n, n)} | {_pct(targets['half']['fraction'][n])} |"
            f" {_pct(sv)} | {ps_txt} |{pi_cols} {paper_col.get(n, '-')} |"
        )
    if pi:
        lines += [
            "",
            f"Paper-implied threshold: {pi['definition']} = {pi['threshold']:.3f}."
            + (
                " Random has already forgotten all spam by then, so here this"
                " target only means 'recall reaches 0' and is not comparable to"
                " the paper's."
                if pi["threshold"] < 0.02
                else ""
            ),
        ]
    for metric, title in (
        ("recall_spam", "Recall(spam) on the test split"),
        ("f1_ham", "F1 of the ham class"),
        ("macro_f1", "Macro-F1 (both classes)"),
        ("acc_ham", "Accuracy on the ham test messages"),
    ):
        lines += [
            "",
            f"## {title} (mean ± std over seeds)",
            "",
            "| score | " + " | ".join(_pct(f) for f in rep_fr) + " |",
            "|---|" + "---|" * len(rep_fr),
        ]
        for n in cfg.scores:
            lines.append(
                f"| {SCORE_LABELS.get(n, n)} | "
                + " | ".join(fmt(by[(n, f)][metric], ".3f") for f in rep_fr)
                + " |"
            )
    lines += [
        "",
        f"Largest spread of mean F1(ham) across scores below 100% deletion:"
        f" {spread:.4f} (paper: ham macro-F1 rises slightly with deletion and the"
        " methods never differ by more than a stripped small amount).",
    ]
    claims = _claims(targets)
    lines += ["", "## Claims", "", harness.render_claims(claims)]
    plots = _plots(rd.workdir, cfg, by, targets)
    lines += [""] + [f"![{p}]({p})" for p in plots]
    versions = rd.versions
    lines += [
        "",
        f"Compute: {timing['seeds_total_s']:.1f}s over {len(cfg.seeds)} seeds"
        " (features, scores, every fit; per seed "
        + ", ".join(f"{v:.1f}" for v in timing["seed_s"].values())
        + "s)"
        + (f"; seeds {reused_seeds} reused from rows/" if reused_seeds else "")
        + f"; backend {jax.default_backend()}; versions {versions}.",
    ]
    rd.write_report(lines)
    return harness.finish(
        rd,
        claims,
        wall_time_s=time.perf_counter() - t_start,
        paper=PAPER,
        manifest={"data": data_info},
        data=data_info,
        rows=rows,
        aggregate=agg,
        targets=targets,
        ham_f1_max_spread=spread,
        timing=timing,
        reused_seeds=reused_seeds,
        plots=plots,
    )


def _claims(targets) -> list[Claim]:
    """Paper 002's SMS claims, checked on the 'halve recall' target."""
    half = targets["half"]["fraction"]
    out = []
    if "lr_cos" in half and "random" in half:
        lr, rnd = half["lr_cos"], half["random"]
        out.append(
            Claim(
                "lr_cos_before_random",
                "lr-cos halves spam recall with fewer deletions than random"
                " (fraction of train spam deleted)",
                paper="70% vs 90%",
                ours=f"{_pct(lr)} vs {_pct(rnd)}",
                threshold="lr-cos < random",
                holds=None if lr is None or rnd is None else lr < rnd,
                evidence=["results.json:targets.half.fraction"],
            )
        )
    savings = {
        n: v
        for n, v in targets["half"]["saving_vs_random"].items()
        if n not in ("random", "norm") and v is not None
    }
    if savings:
        best = max(savings, key=savings.get)
        out.append(
            Claim(
                "best_selective_saving",
                f"the best selective score ({SCORE_LABELS.get(best, best)}) saves"
                " deletions over random",
                paper=0.17,
                ours=savings[best],
                threshold="> 0",
                holds=savings[best] > 0,
                evidence=["results.json:targets.half.saving_vs_random"],
            )
        )
    return out


def _sklearn_version():
    import sklearn

    return sklearn.__version__


def _plots(workdir, cfg, by, targets):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    fr = sorted(float(f) for f in cfg.fractions)
    x = 100 * np.asarray(fr)
    fig = Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        ("recall_spam", "Recall(spam), test"),
        ("f1_ham", "F1(ham), test"),
        ("macro_f1", "Macro-F1, test"),
    )
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for n in cfg.scores:
            m = np.asarray([by[(n, f)][metric]["mean"] for f in fr])
            s = np.nan_to_num(np.asarray([by[(n, f)][metric]["std"] for f in fr]))
            (line,) = ax.plot(x, m, marker=".", label=SCORE_LABELS.get(n, n))
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15)
        if metric == "recall_spam":
            ax.axhline(
                targets["half"]["threshold"],
                color="k",
                ls="--",
                lw=0.8,
                label="half of no-deletion recall",
            )
        ax.set_xlabel("% of train spam deleted")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    kind = "SYNTHETIC corpus" if cfg.dataset == "synthetic" else "SMS Spam"
    fig.suptitle(f"Selective vs random deletion of spam ({kind}; mean ± std)")
    ev.save_figure(fig, os.path.join(workdir, "deletion_curves.png"))
    return ["deletion_curves.png"]


def main(argv=None):
    return harness.driver_main(
        argv,
        description=__doc__.split("\n")[0],
        get_config=get_config,
        run=run,
        presets=("sms", "synthetic", "smoke"),
        workdir="runs/distributional_text",
        int_overrides={"seeds": "seeds"},
        str_overrides={"sms-path": "sms_path"},
        data_errors=(MissingDataError,),
    )


if __name__ == "__main__":
    main()

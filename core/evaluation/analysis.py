"""Results of an experiment as tables: what the Results page draws and a reviewer can recompute.

Every function takes the long frame of ``outputs_frame`` (one row per output, one column per
``metric@reference``) and returns a DataFrame.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from core.evaluation.stats import bootstrap_ci, mcnemar, paired_bootstrap, seed_spread, unpaired_bootstrap
from core.pipeline import metrics
from core.pipeline.conditions import CONDITIONS, REASONING_ON, RECONSTRUCTIONS
from db.queries import output_rows
from db.session import session_scope

EM = "exact_match@gold"
REFERENCES = ("gold", "reference_summary", "original_output", "original_prompt")  # what metrics are scored against
CONTINUOUS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_p", "bertscore_r", "bertscore_f1")
COMPRESSED_CONDITIONS = ("compressed", "reasoning_on_reconstructed", "reasoning_on_infilled")
# Within one experiment, what an output shares with its baseline output (db.queries.baseline_row_key across several).
PROMPT_KEY = ["model", "seed", "source_id"]


def outputs_frame(db_url: str, experiment_id: int) -> pd.DataFrame:
    with session_scope(db_url) as session:
        return pd.DataFrame(output_rows(session, experiment_id))


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if "@" in c)


def ratio_curves(frame: pd.DataFrame, metric: str, condition: str = "compressed", seed: int = 0) -> pd.DataFrame:
    """Mean and 95% bootstrap interval of a metric at each ratio, per model and compressor.

    The uncompressed baseline (ratio 1) is drawn into every compressor's line, since it is
    where each line starts.
    """
    if metric not in frame:
        return pd.DataFrame(columns=["model", "compressor", "ratio", "mean", "low", "high", "n", "run_id"])
    rows = []
    baseline = frame[(frame["condition"] == "original") & frame[metric].notna()]
    compressed = frame[(frame["condition"] == condition) & frame[metric].notna()]
    for (model, compressor), group in compressed.groupby(["model", "compressor"]):
        base = baseline[baseline["model"] == model]
        parts = [(1.0, base)] + [(ratio, g) for ratio, g in group.groupby("ratio")]
        for ratio, part in parts:
            if part.empty:
                continue
            ci = bootstrap_ci(part[metric].to_numpy(), seed=seed)
            rows.append({"model": model, "compressor": compressor, "ratio": float(ratio), "mean": ci.mean,
                         "low": ci.low, "high": ci.high, "n": ci.n,
                         "run_id": None if part is base else int(part["run_id"].min())})
    return pd.DataFrame(rows)


RECONSTRUCTION_METRICS = ("dropped_words_restored", "dropped_numbers_restored", "bleu", "rougeL", "bertscore_f1")


def reconstruction_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Infill against instruction reconstruction, per model, compressor and ratio: how much of the dropped
    text each brings back (against the original prompt), and the accuracy of answering what it rebuilt."""
    rebuilt = frame[frame["condition"].isin(RECONSTRUCTIONS)]
    if rebuilt.empty:
        return pd.DataFrame()
    keys = ["model", "compressor", "ratio", "condition"]
    wanted = [f"{m}@original_prompt" for m in RECONSTRUCTION_METRICS if f"{m}@original_prompt" in frame]
    table = rebuilt.groupby(keys)[wanted].mean()
    table.columns = [c.removesuffix("@original_prompt") for c in table.columns]
    table["n"] = rebuilt.groupby(keys).size()
    if EM in frame:
        reasoning = frame[frame["condition"].isin(REASONING_ON)].assign(
            condition=lambda f: f["condition"].map(REASONING_ON))
        table["accuracy answering it"] = reasoning.groupby(keys)[EM].mean()
    return table.reset_index()


def answer_tokens(trajectory: dict, answer: str) -> list[int]:
    """Positions of the answer tokens whose text holds the last occurrence of ``answer`` (as extracted)."""
    pieces = trajectory["piece"]
    ends = np.cumsum([len(p) for p in pieces])
    text = "".join(pieces)
    spans = [m.span() for m in re.finditer(metrics.NUMBER, text) if metrics.normalize_number(m.group()) == answer]
    if not spans:
        return []
    first, last = spans[-1]
    return [i for i, end in enumerate(ends) if end > first and end - len(pieces[i]) < last]


COMMITMENT_COLUMNS = ["run_id", "source_id", "condition", "compressor", "ratio", "commit_step_share", "confidence",
                      "correct"]


def answer_commitment(frame: pd.DataFrame) -> pd.DataFrame:
    """For each math output with a trajectory and an answer: when its final-answer tokens were committed
    (as a share of the output's steps) and how sure the model was of them then, and whether it was right."""
    rows = []
    if "trajectory" not in frame or EM not in frame:
        return pd.DataFrame(columns=COMMITMENT_COLUMNS)
    wanted = frame[(frame["task"] == "math") & frame["extracted_answer"].notna() & frame[EM].notna()]
    for row in wanted.to_dict("records"):
        trajectory = row["trajectory"]
        if not isinstance(trajectory, dict):
            continue
        positions = [i for i in answer_tokens(trajectory, row["extracted_answer"]) if trajectory["step"][i] > 0]
        if not positions:
            continue
        last = max(trajectory["step"])
        rows.append({"run_id": row["run_id"], "source_id": row["source_id"], "condition": row["condition"],
                     "compressor": row["compressor"], "ratio": row["ratio"],
                     "commit_step_share": float(np.mean([trajectory["step"][i] for i in positions]) / last),
                     "confidence": float(np.mean([trajectory["prob"][i] for i in positions])),
                     "correct": bool(row[EM] > 0.5)})
    return pd.DataFrame(rows, columns=COMMITMENT_COLUMNS)


def compute_savings(frame: pd.DataFrame) -> pd.DataFrame:
    """Quality against compute per model, compressor, ratio and sampler mode: the share of the token
    positions the model computed that compression saved (against the same prompt's baseline output),
    and the accuracy on the compressed and on the original prompts."""
    needed = {"tokens_processed", "sampler"}
    if not needed <= set(frame) or frame["tokens_processed"].isna().all():
        return pd.DataFrame()
    base = frame[frame["condition"] == "original"][PROMPT_KEY + ["tokens_processed"] + ([EM] if EM in frame else [])]
    compressed = frame[frame["condition"] == "compressed"]
    joined = compressed.merge(base, on=PROMPT_KEY, suffixes=("", "_original")).dropna(
        subset=["tokens_processed", "tokens_processed_original"])
    if joined.empty:
        return pd.DataFrame()
    joined["compute_saved"] = 1 - joined["tokens_processed"] / joined["tokens_processed_original"]
    groups = joined.groupby(["model", "compressor", "ratio", "sampler"])
    table = groups.agg(compute_saved=("compute_saved", "mean"), forward_passes=("forward_passes", "mean"),
                       n=("compute_saved", "size"))
    if EM in joined:
        table["accuracy"] = groups[EM].mean()
        table["accuracy_original"] = groups[f"{EM}_original"].mean()
    return table.reset_index()


def study_table(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Rows condition x task (model x condition x task for several models), columns the metrics against one
    reference (means), as in the study."""
    wanted = [c for c in metric_columns(frame) if c.endswith(f"@{reference}")]
    if reference != "gold" and EM in frame:
        wanted = [EM] + wanted
    if not wanted:
        return pd.DataFrame()
    rows = (["model"] if frame["model"].nunique() > 1 else []) + ["condition", "task"]
    table = frame.groupby(rows)[wanted].mean()
    table.columns = [c.replace(f"@{reference}", "") for c in table.columns]
    order = {c: i for i, c in enumerate(CONDITIONS)}
    return table.sort_index(key=lambda idx: idx.map(lambda v: order.get(v, 99)) if idx.name == "condition" else idx)


def _paired(frame: pd.DataFrame, metric: str, model: str, seed: int, compressor: str, ratio: float,
            condition: str) -> pd.DataFrame:
    base = frame[(frame["condition"] == "original") & (frame["model"] == model) & (frame["seed"] == seed)]
    other = frame[(frame["condition"] == condition) & (frame["model"] == model) & (frame["seed"] == seed)
                  & (frame["compressor"] == compressor) & (frame["ratio"] == ratio)]
    joined = base[["source_id", metric]].merge(other[["source_id", metric]], on="source_id",
                                              suffixes=("_original", "_other"))
    return joined.dropna()


def significance(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Original against each compressed condition, paired by prompt: McNemar for exact match,
    paired bootstrap for continuous metrics against the gold or reference text."""
    rows = []
    configs = frame[frame["condition"].isin(COMPRESSED_CONDITIONS)][
        ["model", "seed", "compressor", "ratio", "condition"]].drop_duplicates()
    continuous = [c for c in metric_columns(frame)
                  if c.split("@")[0] in CONTINUOUS and c.endswith(("@reference_summary", "@gold"))]
    for config in configs.itertuples(index=False):
        for metric in ([EM] if EM in frame else []) + continuous:
            pairs = _paired(frame, metric, config.model, config.seed, config.compressor, config.ratio,
                            config.condition)
            if pairs.empty:
                continue
            a, b = pairs[f"{metric}_original"].to_numpy(), pairs[f"{metric}_other"].to_numpy()
            row = {"model": config.model, "seed": config.seed, "compressor": config.compressor,
                   "ratio": config.ratio, "condition": config.condition, "metric": metric, "n": len(a),
                   "original": float(a.mean()), "other": float(b.mean())}
            if metric == EM:
                test = mcnemar(a > 0.5, b > 0.5)
                row.update(test="McNemar" + (" (exact)" if test.exact else " (chi-square)"), difference=test.difference,
                           p_value=test.p_value, effect_size=test.odds_ratio, low=None, high=None,
                           effect="odds ratio (only compressed right / only original right)")
            else:
                test = paired_bootstrap(a, b, seed=seed)
                row.update(test="paired bootstrap", difference=test.difference, p_value=test.p_value,
                           effect_size=test.effect_size, low=test.low, high=test.high, effect="Cohen's d_z")
            rows.append(row)
    return pd.DataFrame(rows)


def model_comparison(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Every pair of models of an experiment on the same prompts (seed and source), per condition, compressor and
    ratio: each model's mean and B - A, for the score itself and for its degradation (compressed minus original,
    per prompt). McNemar on exact match (of the scores), paired bootstrap for the rest."""
    models = sorted(frame["model"].unique())
    continuous = [c for c in metric_columns(frame)
                  if c.split("@")[0] in CONTINUOUS and c.endswith(("@reference_summary", "@gold"))]
    metrics = ([EM] if EM in frame else []) + continuous
    rows = []
    configs = frame[["condition", "compressor", "ratio"]].drop_duplicates().itertuples(index=False)
    for condition, compressor, ratio in configs:
        part = frame[(frame["condition"] == condition) & (frame["compressor"] == compressor)
                     & (frame["ratio"] == ratio)]
        for metric in metrics:
            for measure in ("score", "degradation") if condition != "original" else ("score",):
                values = {m: _per_prompt(frame, part, m, metric, measure) for m in models}
                for i, model_a in enumerate(models):
                    for model_b in models[i + 1:]:
                        both = pd.concat([values[model_a], values[model_b]], axis=1, join="inner").dropna()
                        if both.empty:
                            continue
                        a, b = both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()
                        row = {"model_a": model_a, "model_b": model_b, "condition": condition,
                               "compressor": compressor, "ratio": ratio, "metric": metric, "measure": measure,
                               "n": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean())}
                        if metric == EM and measure == "score":
                            test = mcnemar(a > 0.5, b > 0.5)
                            row.update(test="McNemar", difference=test.difference, p_value=test.p_value,
                                       low=None, high=None)
                        else:
                            test = paired_bootstrap(a, b, seed=seed)
                            row.update(test="paired bootstrap", difference=test.difference, p_value=test.p_value,
                                       low=test.low, high=test.high)
                        rows.append(row)
    return pd.DataFrame(rows, columns=["model_a", "model_b", "condition", "compressor", "ratio", "metric", "measure",
                                       "n", "mean_a", "mean_b", "difference", "low", "high", "p_value", "test"])


def _per_prompt(frame: pd.DataFrame, part: pd.DataFrame, model: str, metric: str, measure: str) -> pd.Series:
    """One model's metric per (seed, source_id) in ``part``; as a degradation, minus its original's."""
    mine = part[part["model"] == model].dropna(subset=[metric])
    if measure == "score":
        return mine.set_index(["seed", "source_id"])[metric]
    return _with_drop(frame, mine, metric).set_index(["seed", "source_id"])["drop"]


def _with_drop(frame: pd.DataFrame, part: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``part``'s rows that have the metric, with ``drop``: it minus its prompt's original output's (same model
    and seed)."""
    key = ["model", "seed", "source_id"]
    base = frame[frame["condition"] == "original"].dropna(subset=[metric])
    joined = part.dropna(subset=[metric]).merge(base[key + [metric]], on=key, suffixes=("", "_original"))
    return joined.assign(drop=joined[metric] - joined[f"{metric}_original"])


def seed_variance(frame: pd.DataFrame, metric: str = EM) -> pd.DataFrame:
    """Run-to-run spread: the metric's mean per seed, then its spread across seeds, per configuration."""
    if metric not in frame:
        return pd.DataFrame()
    per_seed = frame.dropna(subset=[metric]).groupby(["model", "compressor", "ratio", "condition", "seed"])[metric].mean()
    rows = []
    for key, scores in per_seed.groupby(level=[0, 1, 2, 3]):
        spread = seed_spread(scores.to_numpy())
        rows.append(dict(zip(["model", "compressor", "ratio", "condition"], key), mean=spread.mean, std=spread.std,
                         low=spread.low, high=spread.high, seeds=spread.seeds))
    return pd.DataFrame(rows)


def precision_recall(frame: pd.DataFrame) -> pd.DataFrame:
    """Per prompt, BERTScore precision and recall of the compressed-prompt output against the original
    output: recall below precision means the output left things out (omission), the reverse added (drift)."""
    p, r = "bertscore_p@original_output", "bertscore_r@original_output"
    if p not in frame:
        return pd.DataFrame()
    part = frame[frame["condition"] == "compressed"].dropna(subset=[p, r])
    return part[["model", "compressor", "ratio", "run_id", "source_id", "task", p, r]].rename(
        columns={p: "precision", r: "recall"})


NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbers_kept(frame: pd.DataFrame) -> pd.DataFrame:
    """Per math prompt: the share of its numbers still in the compressed prompt, and whether the answer stayed right."""
    part = frame[(frame["condition"] == "compressed") & (frame["task"] == "math")]
    if part.empty or EM not in frame:
        return pd.DataFrame()
    rows = []
    for row in part.to_dict("records"):
        original = NUMBER.findall(row["item_prompt"])
        kept = set(NUMBER.findall(row["prompt"]))
        share = sum(n in kept for n in original) / len(original) if original else 1.0
        rows.append({"model": row["model"], "compressor": row["compressor"], "ratio": row["ratio"],
                     "run_id": row["run_id"], "source_id": row["source_id"], "numbers_kept": share,
                     "correct": row[EM]})
    return pd.DataFrame(rows)


def compressed_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs that hold compressed prompts, one row each, in plan order."""
    part = frame[frame["condition"] == "compressed"]
    return part[["run_id", "model", "compressor", "ratio", "seed"]].drop_duplicates("run_id").sort_values("run_id")


def prompt_rows(frame: pd.DataFrame, run_id: int) -> pd.DataFrame:
    """One row per prompt of a compressed run, with the scores that tell which prompts to open."""
    part = frame[(frame["run_id"] == run_id) & (frame["condition"] == "compressed")]
    run = part.iloc[0] if len(part) else None
    columns = ["source_id", "task", "ratio_achieved", "prompt"]
    table = part[columns].rename(columns={"prompt": "compressed prompt"})
    if run is not None and EM in frame:
        original = frame[(frame["condition"] == "original") & (frame["model"] == run["model"])
                         & (frame["seed"] == run["seed"])].set_index("source_id")[EM]
        table["correct on original"] = table["source_id"].map(original)
        table["correct on compressed"] = part[EM].to_numpy()
    f1 = "bertscore_f1@original_output"
    if f1 in part:
        table["BERTScore F1 vs original output"] = part[f1].to_numpy()
    return table.reset_index(drop=True)


def length_control(frame: pd.DataFrame, bins: int = 4) -> pd.DataFrame:
    """Accuracy by prompt-length bin, for the original prompt's length and the compressed prompt's."""
    if EM not in frame:
        return pd.DataFrame()
    original = frame[frame["condition"] == "original"].set_index(PROMPT_KEY)["prompt_tokens"]
    part = frame[frame["condition"] == "compressed"].dropna(subset=[EM]).copy()
    if part.empty:
        return pd.DataFrame()
    part["original_tokens"] = [original.get((m, s, i), np.nan) for m, s, i in
                               zip(part["model"], part["seed"], part["source_id"])]
    rows = []
    for column, label in (("prompt_tokens", "compressed prompt"), ("original_tokens", "original prompt")):
        values = part.dropna(subset=[column])
        if values[column].nunique() < 2:
            continue
        binned = pd.qcut(values[column], q=min(bins, values[column].nunique()), duplicates="drop")
        for interval, group in values.groupby(binned, observed=True):
            rows.append({"length of": label, "tokens": str(interval), "accuracy": group[EM].mean(), "n": len(group)})
    return pd.DataFrame(rows)


# What makes an output of one experiment the same measurement as an output of another (see compare_experiments).
PAIR_KEY = ["source", "source_id", "compressor", "ratio", "seed"]
COMPARE_COLUMNS = ["condition", "task", "metric", "mean_a", "n_a", "mean_b", "n_b", "difference", "low", "high",
                   "p_value", "pairing"]


def _compared_metrics(frame_a: pd.DataFrame, frame_b: pd.DataFrame, reference: str) -> list[str]:
    columns = set(metric_columns(frame_a)) | set(metric_columns(frame_b))
    wanted = sorted(c for c in columns if c.endswith(f"@{reference}") and c != EM)
    return ([EM] if EM in columns else []) + wanted


def _condition_tasks(frame: pd.DataFrame) -> set[tuple[str, str]]:
    if frame.empty:
        return set()
    return set(frame[["condition", "task"]].itertuples(index=False, name=None))


def _scores(frame: pd.DataFrame, condition: str, task: str, metric: str) -> pd.Series:
    """The metric's values under one condition and task, indexed by PAIR_KEY."""
    if frame.empty or metric not in frame:
        return pd.Series(dtype=float)
    part = frame[(frame["condition"] == condition) & (frame["task"] == task)].dropna(subset=[metric])
    return part.set_index(PAIR_KEY)[metric]


def _difference(a: pd.Series, b: pd.Series, seed: int) -> dict:
    row = {"mean_a": a.mean() if len(a) else np.nan, "n_a": len(a),
           "mean_b": b.mean() if len(b) else np.nan, "n_b": len(b)}
    if a.empty or b.empty:
        return row | {"difference": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan,
                      "pairing": "only in A" if b.empty else "only in B"}
    if a.index.is_unique and b.index.is_unique and set(a.index) == set(b.index):
        test = paired_bootstrap(a.to_numpy(), b.reindex(a.index).to_numpy(), seed=seed)
        pairing = "paired"
    else:
        test = unpaired_bootstrap(a.to_numpy(), b.to_numpy(), seed=seed)
        pairing = "unpaired"
    return row | {"difference": test.difference, "low": test.low, "high": test.high, "p_value": test.p_value,
                  "pairing": pairing}


def compare_experiments(frame_a: pd.DataFrame, frame_b: pd.DataFrame, reference: str = "gold",
                        seed: int = 0) -> pd.DataFrame:
    """Experiment B against experiment A per condition x task x metric (the metrics against ``reference``, and
    exact_match@gold): each side's mean and count, B - A with a 95% bootstrap interval and a two-sided p-value.

    An output of A and one of B measure the same thing when they share the prompt (source, source_id), the
    compressor, the ratio and the seed under the condition. The model is not in that key: running one plan on two
    models (LLaDA against an autoregressive control) is what comparing experiments is most often for. When both
    experiments scored exactly the same keys, each once, the test is a paired bootstrap of the per-output
    differences (``pairing`` "paired"); otherwise (other prompts, another plan, an unfinished run, two models in
    one experiment) it is an unpaired bootstrap of the two means, so no output is dropped. The bootstrap resamples
    outputs: where a condition holds several compressors, ratios or seeds per prompt, those are not independent
    and the interval is somewhat narrow. A condition and task present in one experiment only keep that side's
    mean, with no difference.
    """
    return _compare(frame_a, frame_b, reference, seed, _scores, with_original=True)


def _compare(frame_a: pd.DataFrame, frame_b: pd.DataFrame, reference: str, seed: int, values,
             with_original: bool) -> pd.DataFrame:
    """B against A per condition x task x metric, on ``values(frame, condition, task, metric)`` (indexed by
    PAIR_KEY), as ``compare_experiments`` describes."""
    metrics = _compared_metrics(frame_a, frame_b, reference)
    order = {c: i for i, c in enumerate(CONDITIONS)}
    groups = sorted((g for g in _condition_tasks(frame_a) | _condition_tasks(frame_b)
                     if with_original or g[0] != "original"), key=lambda g: (order.get(g[0], 99), g))
    rows = []
    for condition, task in groups:
        for metric in metrics:
            a, b = (values(f, condition, task, metric) for f in (frame_a, frame_b))
            if a.empty and b.empty:
                continue
            rows.append({"condition": condition, "task": task, "metric": metric} | _difference(a, b, seed))
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def _drops(frame: pd.DataFrame, condition: str, task: str, metric: str) -> pd.Series:
    """Per output of a condition: its metric minus its prompt's original output's (same model and seed), indexed
    by PAIR_KEY."""
    if frame.empty or metric not in frame:
        return pd.Series(dtype=float)
    joined = _with_drop(frame, frame[(frame["condition"] == condition) & (frame["task"] == task)], metric)
    return pd.Series(joined["drop"].to_numpy(), index=pd.MultiIndex.from_frame(joined[PAIR_KEY]))


def compare_degradation(frame_a: pd.DataFrame, frame_b: pd.DataFrame, reference: str = "gold",
                        seed: int = 0) -> pd.DataFrame:
    """Experiment B against A on what compression costs: per condition other than the original, each output's
    metric minus its own prompt's original output's, then B - A as in ``compare_experiments`` (paired where both
    scored the same keys). Two experiments of one plan on two models compare how much each model degrades."""
    return _compare(frame_a, frame_b, reference, seed, _drops, with_original=False)


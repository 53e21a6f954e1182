"""Results of an experiment as tables: what the Results page draws and a reviewer can recompute.

Every function takes the long frame of ``outputs_frame`` (one row per output, one column per
``metric@reference``) and returns a DataFrame.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from core.experiments import CONDITIONS, export_rows
from core.stats import bootstrap_ci, mcnemar, paired_bootstrap, seed_spread

EM = "exact_match@gold"
CONTINUOUS = ("bleu", "rouge1", "rouge2", "rougeL", "bertscore_p", "bertscore_r", "bertscore_f1")
COMPRESSED_CONDITIONS = ("compressed", "reasoning_on_reconstructed")


def outputs_frame(db_url: str, experiment_id: int) -> pd.DataFrame:
    return pd.DataFrame(export_rows(db_url, experiment_id))


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(c for c in frame.columns if "@" in c)


def ratio_curves(frame: pd.DataFrame, metric: str, condition: str = "compressed", seed: int = 0) -> pd.DataFrame:
    """Mean and 95% bootstrap interval of a metric at each ratio, per model and compressor.

    The uncompressed baseline (ratio 1) is drawn into every compressor's line, since it is
    where each line starts.
    """
    if metric not in frame:
        return pd.DataFrame(columns=["model", "compressor", "ratio", "mean", "low", "high", "n"])
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
                         "low": ci.low, "high": ci.high, "n": ci.n})
    return pd.DataFrame(rows)


def study_table(frame: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Rows condition x task, columns the metrics against one reference (means), as in the study."""
    wanted = [c for c in metric_columns(frame) if c.endswith(f"@{reference}")]
    if reference != "gold" and EM in frame:
        wanted = [EM] + wanted
    if not wanted:
        return pd.DataFrame()
    table = frame.groupby(["condition", "task"])[wanted].mean()
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
    return part[["model", "compressor", "ratio", "source_id", "task", p, r]].rename(
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
                     "source_id": row["source_id"], "numbers_kept": share, "correct": row[EM]})
    return pd.DataFrame(rows)


def length_control(frame: pd.DataFrame, bins: int = 4) -> pd.DataFrame:
    """Accuracy by prompt-length bin, for the original prompt's length and the compressed prompt's."""
    if EM not in frame:
        return pd.DataFrame()
    original = frame[frame["condition"] == "original"].set_index(["model", "seed", "source_id"])["prompt_tokens"]
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

import pandas as pd
import pytest

from core.evaluation import analysis
from core.pipeline.experiments import Runner, find_or_create
from core.pipeline.service import ModelPool


def synthetic():
    """Five math prompts: the baseline right on all, compression at ratio 2 wrong on 3 of them."""
    rows = []
    for i in range(5):
        common = {"model": "m", "seed": 0, "source_id": f"p{i}", "task": "math",
                  "item_prompt": f"Tom has {i + 10} apples and 3 pears."}
        rows.append({**common, "run_id": 1, "condition": "original", "compressor": "none", "ratio": 1.0,
                     "prompt_tokens": 10 + i,
                     "prompt": common["item_prompt"], "exact_match@gold": 1.0})
        kept_number = i < 2
        rows.append({**common, "run_id": 2, "condition": "compressed", "compressor": "random", "ratio": 2.0,
                     "prompt_tokens": 5,
                     "prompt": f"Tom {i + 10} apples" if kept_number else "Tom apples",
                     "exact_match@gold": 1.0 if kept_number else 0.0,
                     "bertscore_p@original_output": 0.9, "bertscore_r@original_output": 0.8})
    return pd.DataFrame(rows)


def test_ratio_curve_starts_at_the_baseline():
    curve = analysis.ratio_curves(synthetic(), "exact_match@gold")
    assert curve[["ratio", "mean", "n"]].values.tolist() == [[1.0, 1.0, 5], [2.0, 0.4, 5]]
    assert curve["run_id"].tolist()[1] == 2 and pd.isna(curve["run_id"].tolist()[0])  # the baseline opens nothing
    assert (curve["low"] <= curve["mean"]).all() and (curve["mean"] <= curve["high"]).all()


def test_significance_pairs_by_prompt():
    table = analysis.significance(synthetic())
    row = table[table["metric"] == "exact_match@gold"].iloc[0]
    assert row["test"] == "McNemar (exact)" and row["n"] == 5
    assert row["difference"] == pytest.approx(-0.6) and row["p_value"] == pytest.approx(0.25)  # 2 * (1/2)^3


def test_numbers_kept_precision_recall_and_study_table():
    kept = analysis.numbers_kept(synthetic())
    assert kept["numbers_kept"].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    assert kept["correct"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    pr = analysis.precision_recall(synthetic())
    assert len(pr) == 5 and (pr["recall"] < pr["precision"]).all()
    table = analysis.study_table(synthetic(), "gold")
    assert table.loc[("original", "math"), "exact_match"] == 1.0
    assert table.loc[("compressed", "math"), "exact_match"] == pytest.approx(0.4)


def test_analysis_of_a_stored_experiment(tiny_plan, tiny_checkpoint, db_url):
    plan = tiny_plan(tiny_checkpoint, seeds=[0, 1])
    experiment_id = find_or_create(plan, db_url)
    Runner(experiment_id, ModelPool("cpu"), db_url).run()
    frame = analysis.outputs_frame(db_url, experiment_id)
    assert len(frame) == 2 * 3 * (1 + 2 * 3)
    curve = analysis.ratio_curves(frame, "exact_match@gold")
    assert sorted(curve["ratio"].unique()) == [1.0, 1.5, 3.0]
    sig = analysis.significance(frame)
    assert set(sig["condition"]) == {"compressed", "reasoning_on_reconstructed"} and (sig["n"] == 3).all()
    spread = analysis.seed_variance(frame)
    assert (spread["seeds"] == 2).all()
    assert not analysis.length_control(frame).empty
    table = analysis.study_table(frame, "original_output")
    assert {"compressed", "reasoning_on_reconstructed"} <= set(table.index.get_level_values("condition"))


def test_reconstruction_table_sets_infill_beside_instruction_with_the_accuracy_on_each():
    rows = []
    for i in range(4):
        common = {"model": "m", "compressor": "random", "ratio": 2.0, "seed": 0, "source_id": f"p{i}", "task": "math"}
        rows += [{**common, "condition": "reconstructed", "dropped_words_restored@original_prompt": 0.25,
                  "bleu@original_prompt": 40.0},
                 {**common, "condition": "infilled", "dropped_words_restored@original_prompt": 0.5 + 0.1 * i,
                  "bleu@original_prompt": 60.0},
                 {**common, "condition": "reasoning_on_reconstructed", "exact_match@gold": float(i == 0)},
                 {**common, "condition": "reasoning_on_infilled", "exact_match@gold": float(i < 3)}]
    table = analysis.reconstruction_table(pd.DataFrame(rows)).set_index("condition")
    assert table.loc["infilled", "dropped_words_restored"] == pytest.approx(0.65)
    assert table.loc["reconstructed", "dropped_words_restored"] == pytest.approx(0.25)
    assert table.loc["infilled", "accuracy answering it"] == pytest.approx(0.75)
    assert table.loc["reconstructed", "accuracy answering it"] == pytest.approx(0.25)
    assert table.loc["infilled", "bleu"] == 60.0 and (table["n"] == 4).all()
    assert analysis.reconstruction_table(synthetic()).empty


def trajectory(pieces, steps, probs):
    return {"piece": pieces, "step": steps, "prob": probs}


def test_answer_tokens_are_those_holding_the_last_occurrence_of_the_answer():
    t = trajectory(["The", " answer", " is", " 1", ",2", "00", ".", " So", " 1", "200", "<|eot_id|>"],
                   list(range(1, 12)), [0.5] * 11)
    assert analysis.answer_tokens(t, "1200") == [8, 9]
    assert analysis.answer_tokens(t, "7") == []


def test_answer_commitment_and_compute_savings_from_stored_rows():
    rows = []
    for i, (right_original, right_compressed) in enumerate([(True, False), (True, True)]):
        common = {"model": "m", "seed": 0, "source_id": f"p{i}", "task": "math", "sampler": "reference",
                  "forward_passes": 8}
        rows.append({**common, "run_id": 1, "condition": "original", "compressor": "none", "ratio": 1.0,
                     "extracted_answer": "42", "exact_match@gold": float(right_original), "tokens_processed": 8 * 40,
                     "trajectory": trajectory([" so", " 4", "2"], [8, 2, 2], [0.2, 0.9, 0.8])})
        rows.append({**common, "run_id": 2, "condition": "compressed", "compressor": "random", "ratio": 2.0,
                     "extracted_answer": "42", "exact_match@gold": float(right_compressed), "tokens_processed": 8 * 30,
                     "trajectory": trajectory([" so", " 4", "2"], [1, 6, 8], [0.9, 0.3, 0.5])})
    frame = pd.DataFrame(rows)
    commitment = analysis.answer_commitment(frame).set_index(["condition", "source_id"])
    # The answer's two tokens: committed at steps 2 and 2 of 8 on the original prompt, 6 and 8 on the compressed.
    assert commitment.loc[("original", "p0"), "commit_step_share"] == pytest.approx(2 / 8)
    assert commitment.loc[("compressed", "p0"), "commit_step_share"] == pytest.approx(7 / 8)
    assert commitment.loc[("compressed", "p0"), "confidence"] == pytest.approx(0.4)
    assert commitment["correct"].tolist() == [True, False, True, True]
    savings = analysis.compute_savings(frame).iloc[0]
    assert savings["compute_saved"] == pytest.approx(1 - 30 / 40) and savings["n"] == 2
    assert savings["accuracy"] == pytest.approx(0.5) and savings["accuracy_original"] == pytest.approx(1.0)
    assert analysis.compute_savings(synthetic()).empty


def two_models():
    """The five prompts of synthetic() on model m, and on model d, which loses only one answer to compression."""
    other = synthetic().assign(model="d", run_id=lambda f: f["run_id"] + 10)
    compressed = other["condition"] == "compressed"
    other.loc[compressed, "exact_match@gold"] = [1.0, 1.0, 1.0, 1.0, 0.0]
    return pd.concat([synthetic(), other], ignore_index=True)


def test_models_of_one_experiment_are_compared_prompt_by_prompt_score_and_degradation():
    table = analysis.model_comparison(two_models()).set_index(["condition", "measure"])
    score = table.loc[("compressed", "score")]
    assert (score["model_a"], score["model_b"], score["n"]) == ("d", "m", 5)
    assert (score["mean_a"], score["mean_b"]) == (pytest.approx(0.8), pytest.approx(0.4))
    assert score["test"] == "McNemar" and score["difference"] == pytest.approx(-0.4)
    assert score["p_value"] == pytest.approx(0.5)  # 2 discordant prompts, both against m: 2 * (1/2)^2
    drop = table.loc[("compressed", "degradation")]
    assert (drop["mean_a"], drop["mean_b"]) == (pytest.approx(-0.2), pytest.approx(-0.6))
    assert drop["test"] == "paired bootstrap" and drop["difference"] == pytest.approx(-0.4)
    assert table.loc[("original", "score"), "difference"] == 0
    assert analysis.model_comparison(synthetic()).empty  # one model: nothing to pair


def test_the_study_table_is_split_by_model_when_an_experiment_ran_several():
    table = analysis.study_table(two_models(), "gold")
    assert table.loc[("d", "compressed", "math"), "exact_match"] == pytest.approx(0.8)
    assert table.loc[("m", "compressed", "math"), "exact_match"] == pytest.approx(0.4)

"""Any input gives a result or a clear message (UserError), never a traceback, and stores nothing half-written."""

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.data import datasets
from core.errors import UserError
from core.pipeline.experiments import Plan
from core.pipeline.service import CompareRequest

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=6)


@SETTINGS
@given(prompt=st.text(max_size=40), compressor=st.sampled_from(["random", "truncate", "llmlingua2", "dllm_confidence",
                                                                 "nope", ""]),
       ratio=json_values, preset=st.sampled_from([None, "demo", "custom", "small", "nope"]),
       sampler=st.none() | st.dictionaries(st.sampled_from(["gen_length", "steps", "block_length", "temperature",
                                                            "mode", "cache", "threshold", "window", "bogus"]),
                                           json_values, max_size=4),
       conditions=st.lists(st.sampled_from(["original", "compressed", "reconstructed", "infilled",
                                            "reasoning_on_infilled", "x"]), max_size=5),
       task=st.sampled_from(["math", "chat", "custom", "poetry"]), params=st.dictionaries(
           st.sampled_from(["seed", "copies", "force_reserve_digit", "bogus"]), json_values, max_size=2))
def test_a_compare_request_is_valid_or_refused_with_a_message(prompt, compressor, ratio, preset, sampler, conditions,
                                                              task, params):
    request = CompareRequest(prompt=prompt, compressor=compressor, ratio=ratio, preset=preset, sampler=sampler,
                             conditions=conditions, task=task, compressor_params=params, model="tiny-model-id")
    try:
        request.validate()
    except UserError as exc:
        assert str(exc)


@SETTINGS
@given(raw=st.dictionaries(st.sampled_from(["name", "source", "n_prompts", "ratios", "seeds", "conditions", "compressors",
                                            "gen_length", "instructions", "batch_size", "infill_length", "infill_k",
                                            "preset", "bogus"]), json_values, max_size=6))
def test_a_plan_is_valid_or_refused_with_a_message(raw):
    try:
        Plan.from_dict({"models": ["compresslens/math-demo"], **raw})
    except UserError as exc:
        assert str(exc)


@SETTINGS
@given(data=st.binary(max_size=300) | st.text(alphabet=string.printable + "é,\"\n", max_size=300).map(str.encode),
       filename=st.sampled_from(["mine.csv", "mine.jsonl", "mine.txt"]), column=st.text(max_size=6))
def test_an_uploaded_table_gives_prompts_or_a_message(data, filename, column):
    try:
        columns = datasets.table_columns(data, filename)
        samples = datasets.from_table(data, filename, columns[0] if columns else column)
    except UserError as exc:
        assert str(exc)
    else:
        assert all(isinstance(s.prompt, str) and s.prompt.strip() for s in samples)

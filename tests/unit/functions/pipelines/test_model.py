"""Pipeline definitions: names, references, cycles and the graph, refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickrun import Pipeline, pipeline
from tickrun.functions.errors import BadRequestError
from tickrun.functions.pipelines import PipelineError, Ref
from tickrun.functions.pipelines.model import topological_order
from tickrun.functions.runs import SqlRunDB

from .conftest import job


def three_steps() -> Pipeline:
    p = Pipeline("prices", project="btc")
    bars = p.step("bars", job("bars"), inputs={"market": "/data/btc.csv.gz"})
    ret = p.step("returns", job("returns"), inputs={"bars": bars.output("bars")})
    p.step(
        "summary",
        job("summary"),
        inputs={"returns": ret.output("returns")},
        params={"source_run": ret.result("uid"), "mean": ret.result("mean_return")},
        after=[bars],
    )
    return p


def test_graph_before_running_has_nodes_and_edges_without_states() -> None:
    g = three_steps().graph()
    assert [n["name"] for n in g["nodes"]] == ["bars", "returns", "summary"]
    assert all(set(n) == {"name", "target"} for n in g["nodes"])
    assert g["nodes"][0]["target"] == job("bars")
    # summary's Refs name returns twice and `after` names bars: one edge each, in order.
    assert g["edges"] == [["bars", "returns"], ["returns", "summary"], ["bars", "summary"]]


def test_refs_name_their_step_kind_and_key() -> None:
    p = three_steps()
    ref = p.steps["summary"].params["source_run"]
    assert ref == Ref("returns", "result", "uid")
    assert p.steps["summary"].inputs["returns"] == Ref("returns", "output", "returns")
    assert p.steps["summary"].upstream() == ["returns", "bars"]


@pytest.mark.parametrize("name", ["", "Has-Caps", "under_score", "-lead", "trail-", "x" * 64])
def test_bad_step_and_pipeline_names_are_400(name: str) -> None:
    with pytest.raises(PipelineError) as err:
        Pipeline(name)
    assert err.value.status == 400
    p = Pipeline("ok")
    with pytest.raises(BadRequestError, match="step name"):
        p.step(name, job("bars"))
    assert p.steps == {}


def test_duplicate_step_is_refused() -> None:
    p = Pipeline("dup")
    p.step("a", job("bars"))
    with pytest.raises(PipelineError, match="step 'a' is defined twice"):
        p.step("a", job("returns"))


def test_ref_to_a_step_of_another_pipeline_is_refused() -> None:
    other = Pipeline("other")
    foreign = other.step("features", job("bars"))
    p = Pipeline("mine")
    with pytest.raises(PipelineError, match="refers to step 'features' of pipeline other"):
        p.step("train", job("returns"), inputs={"bars": foreign.output("bars")})
    with pytest.raises(PipelineError, match="refers to step 'ghost'"):
        p.step("train", job("returns"), after=["ghost"])


def test_a_cycle_made_by_editing_steps_is_found_before_running(
    db: SqlRunDB, tmp_path: Path
) -> None:
    p = Pipeline("loop")
    a = p.step("a", job("bars"))
    b = p.step("b", job("returns"), inputs={"bars": a.output("bars")})
    p.step("c", job("summary"), after=[b])
    a.after = ("c",)  # a -> b -> c -> a
    with pytest.raises(PipelineError, match="cycle") as err:
        p.run()
    loop = err.value.message.split(": ", 1)[1].split(" -> ")
    assert loop[0] == loop[-1] and sorted(loop[:-1]) == ["a", "b", "c"]
    # Each arrow is an edge: the step after it depends on the one before.
    for up, down in zip(loop, loop[1:], strict=False):
        assert up in p.steps[down].upstream()
    assert db.list_runs(limit=10) == []  # nothing was recorded
    with pytest.raises(PipelineError, match="cycle"):
        p.graph()


def test_topological_order_runs_each_step_after_its_upstream() -> None:
    order = topological_order({"d": ["b", "c"], "b": ["a"], "c": ["a"], "a": []})
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")


def test_policy_values_are_checked() -> None:
    with pytest.raises(PipelineError, match="retries"):
        Pipeline("p", retries=-1)
    p = Pipeline("p", retries=2, retry_backoff_s=0.5)
    s = p.step("a", job("bars"))
    assert (s.retries, s.retry_backoff_s) == (2, 0.5)  # the pipeline's default policy
    s2 = p.step("b", job("bars"), retries=0)
    assert s2.retries == 0
    with pytest.raises(PipelineError, match="retry_backoff_s"):
        p.step("c", job("bars"), retry_backoff_s=-1)
    with pytest.raises(PipelineError, match="input is a URI string or a Ref"):
        p.step("d", job("bars"), inputs={"market": 3})
    with pytest.raises(PipelineError, match="parallel"):
        p.run(parallel=0)
    with pytest.raises(PipelineError, match="no steps"):
        Pipeline("empty").graph()
    with pytest.raises(PipelineError, match="project 'my project'"):
        Pipeline("p", project="my project")
    with pytest.raises(PipelineError, match="hyper_strategy must be one of"):
        p.step("e", job("bars"), hyperparams={"rows": [1, 2]}, hyper_strategy="bayes")


def test_unknown_runner_is_400_before_anything_runs(db: SqlRunDB) -> None:
    p = pipeline("runner-check")
    p.step("a", job("bars"))
    with pytest.raises(BadRequestError, match="job runner 'nowhere'"):
        p.run(runner="nowhere")
    assert db.list_runs(limit=10) == []


def test_a_step_of_another_pipeline_is_refused_even_under_a_known_name() -> None:
    other = Pipeline("other")
    theirs = other.step("bars", job("bars"))
    p = Pipeline("mine")
    p.step("bars", job("bars"))
    with pytest.raises(PipelineError, match="of pipeline other, not of mine"):
        p.step("returns", job("returns"), inputs={"bars": theirs.output("bars")})
    with pytest.raises(PipelineError, match="of pipeline other, not of mine"):
        p.step("returns", job("returns"), after=[theirs])

"""The engine on the real SmolLM2: batching, streaming, stopping, errors."""

from __future__ import annotations

from model.schema import GenerationRequest, SamplingParams, Turn

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12, repetition_penalty=1.0)


def _req(text: str, **kw) -> GenerationRequest:
    return GenerationRequest(message=text, sampling=kw.pop("sampling", GREEDY), **kw)


def test_batched_greedy_equals_unbatched(engine):
    reqs = [_req("I feel anxious before exams."),
            _req("Hi", history=[Turn(role="user", content="hello"), Turn(role="assistant", content="Hi there!")])]
    batched = engine.generate(reqs)
    single = [engine.generate([r])[0] for r in reqs]
    assert [b.text for b in batched] == [s.text for s in single]
    assert all(b.text and b.completion_tokens > 0 and b.prompt_tokens > 50 for b in batched)


def test_streamed_deltas_join_to_the_final_text(engine):
    reqs = [_req("How can I calm down when I panic?"), _req("I miss my friends since I moved.")]
    chunks: dict[str, list[str]] = {r.request_id: [] for r in reqs}
    results = engine.generate(reqs, on_delta=lambda rid, d: chunks[rid].append(d))
    for r, res in zip(reqs, results, strict=True):
        assert len(chunks[r.request_id]) > 3  # it really streamed, token by token
        assert "".join(chunks[r.request_id]).strip() == res.text
        assert res.first_token_seconds is not None and 0 < res.first_token_seconds <= res.generation_seconds


def test_token_limit_and_eos(engine):
    short = engine.generate([_req("Tell me a long story about the sea.", sampling=GREEDY.model_copy(
        update={"max_new_tokens": 5}))])[0]
    assert short.finish_reason == "length" and short.completion_tokens == 5
    done = engine.generate([_req("What color is the sky on a clear day?", system_prompt="You answer with one word.",
                                 sampling=GREEDY.model_copy(update={"max_new_tokens": 40}))])[0]
    assert done.finish_reason == "stop" and 0 < done.completion_tokens < 40
    assert "<|im_end|>" not in done.text and "blue" in done.text.lower()


def test_seeded_sampling_is_reproducible(engine):
    s = SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=8, seed=123)
    a = engine.generate([_req("I feel lonely.", sampling=s)])[0]
    b = engine.generate([_req("I feel lonely.", sampling=s)])[0]
    assert a.text == b.text


def test_bad_request_gets_an_error_result_and_the_rest_are_answered(engine):
    bad = _req("hello").model_copy(update={"schema_version": 999})
    good = _req("hello there")
    res = engine.generate([bad, good])
    assert res[0].error == "schema_version" and not res[0].ok
    assert res[1].ok and res[1].text


def test_long_history_is_trimmed_to_the_context(engine):
    hist = []
    for i in range(200):
        hist += [Turn(role="user", content="blah " * 40), Turn(role="assistant", content="mm " * 40)]
    old = engine.max_context
    engine.max_context = 512
    try:
        res = engine.generate([_req("What now?", history=hist)])[0]
    finally:
        engine.max_context = old
    assert res.ok and res.prompt_tokens <= 512 - GREEDY.max_new_tokens

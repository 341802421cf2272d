"""Retrieval: documents and chunking, pooled embeddings against the trace, cosine and BM25 rankings
against hand computations and the library, the index cache, refusals, generation with and without
passages, and the figures."""

from __future__ import annotations

import json
import os

import bm25s
import numpy as np
import pytest

from explorer.analysis.retrieval.documents import (
    Chunking,
    Document,
    bundled,
    chunk_documents,
    document_set,
    read_upload,
    upload_roots,
)
from explorer.analysis.retrieval.embedding import embed_texts
from explorer.analysis.retrieval.generation import PRESETS, build_prompt, compare_generation
from explorer.analysis.retrieval.index import STOPWORDS, IndexCache, build_index
from explorer.analysis.retrieval.search import (
    disagreements,
    ranks_of,
    reciprocal_rank_fusion,
    retrieval_map,
    search,
)
from explorer.core.errors import InputError
from explorer.core.run import run
from explorer.plots.retrieval import (
    next_token_pair,
    passage_map,
    rank_comparison,
    score_bars,
    share_heatmap,
    share_lines,
)

FACTS = (
    Document("keeper", "The keeper of the lighthouse is Edwin Castellan, who has kept the light for years.", "facts"),
    Document("baker", "The only baker in town is Tobias Wren, famous for saffron buns on Anchor Lane.", "facts"),
    Document("bell", "The church bell is called Old Mab and weighs nearly a ton.", "facts"),
    Document("parrot", "The landlord keeps a parrot named Admiral that says mind the tide.", "facts"),
)


# ---------------------------------------------------------------- documents and chunking


def test_bundled_sets_hold_the_facts_and_the_public_domain_passages():
    facts, public = bundled("facts"), bundled("public domain")
    assert 30 <= len(facts) <= 60 and 20 <= len(public) <= 80
    assert any("Edwin Castellan" in d.text for d in facts)
    assert not any("Castellan" in d.text for d in public)
    assert len(document_set("both")) == len(facts) + len(public)


def test_chunks_are_windows_of_words_with_their_character_spans():
    text = "one two  three four\nfive six seven"
    chunks = chunk_documents([Document("d", text)], Chunking(size=3, overlap=1))
    assert [c.text for c in chunks] == ["one two  three", "three four\nfive", "five six seven"]
    for c in chunks:
        assert text[c.start : c.end] == c.text
    assert [c.index for c in chunks] == [0, 1, 2]


def test_token_chunks_follow_the_tokenizer_and_keep_spans(tiny):
    lm = tiny["gpt2"]
    text = "The keeper of the lighthouse is Edwin Castellan, who has kept the light."
    chunks = chunk_documents([Document("d", text)], Chunking(size=5, overlap=2, unit="tokens"), lm.tokenizer)
    n_tokens = len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(chunks) == int(np.ceil((n_tokens - 2) / 3))
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert len(lm.tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 6  # a word may merge differently


@pytest.mark.parametrize("chunking", [Chunking(3, 3), Chunking(1, 0), Chunking(10, -1), Chunking(10, 2, "lines")])
def test_bad_chunking_is_refused_with_a_sentence(chunking):
    with pytest.raises(InputError):
        chunk_documents(FACTS, chunking)


def test_an_empty_document_set_is_refused_with_a_sentence():
    with pytest.raises(InputError, match="document set is empty"):
        document_set("none", pasted="   ")
    with pytest.raises(InputError, match="no words"):
        chunk_documents([Document("blank", " \n ")], Chunking(5, 1))


def test_uploads_are_read_only_from_the_upload_folder(tmp_path):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    mine = uploads / "notes.txt"
    mine.write_text("The ferryman is Gideon Roe.", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours", encoding="utf-8")
    assert read_upload(mine, [uploads]).text == "The ferryman is Gideon Roe."
    link = uploads / "link.txt"
    link.symlink_to(secret)
    for path in (secret, link, uploads / ".." / "secret.txt", "/etc/passwd", uploads):
        with pytest.raises(InputError, match="Only files uploaded here"):
            read_upload(path, [uploads])
    with pytest.raises(InputError, match="Only files uploaded here"):
        document_set("none", uploads=["/etc/hostname"])  # the default roots: gradio's upload folder
    assert all("gradio" in str(root) or os.environ.get("GRADIO_TEMP_DIR") for root in upload_roots())


# ---------------------------------------------------------------- embeddings and rankings


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5"])
def test_pooled_embedding_is_the_mean_of_the_traced_hidden_states_without_special_tokens(tiny, name):
    lm = tiny[name]
    texts = ["The keeper of the lighthouse.", "A bell called Old Mab weighs nearly a ton, they say in town."]
    pooled = embed_texts(lm, texts, layer=1)
    for text, row in zip(texts, pooled):
        trace = run(lm, text)
        stream = trace.adapter.primary_stream
        keep = [not t.special for t in trace.tokens[stream]]
        np.testing.assert_allclose(row, trace.hidden[stream][1][keep].mean(axis=0), atol=1e-4)


@pytest.fixture(scope="module")
def gpt2_index(tiny):
    return build_index(tiny["gpt2"], FACTS, Chunking(size=8, overlap=2), layer=2)


def test_cosine_ranking_equals_a_hand_computation(tiny, gpt2_index):
    lm = tiny["gpt2"]
    question = "Who keeps the lighthouse?"
    result = search(lm, gpt2_index, question, k=3)
    q = embed_texts(lm, [question], 2)[0]
    by_hand = [
        float(np.dot(row, q) / (np.linalg.norm(row) * np.linalg.norm(q)))
        for row in embed_texts(lm, [c.text for c in gpt2_index.chunks], 2)
    ]
    np.testing.assert_allclose(result.dense_scores, by_hand, rtol=1e-4, atol=1e-5)
    best = sorted(range(len(by_hand)), key=lambda i: -by_hand[i])[:3]
    assert [h.chunk.index for h in result.dense] == best
    assert [h.rank for h in result.dense] == [1, 2, 3]


def test_bm25_scores_equal_the_librarys_own(tiny, gpt2_index):
    result = search(tiny["gpt2"], gpt2_index, "the parrot Admiral and the lighthouse", k=3)
    texts = [c.text for c in gpt2_index.chunks]
    library = bm25s.BM25()
    library.index(
        bm25s.tokenize(texts, stopwords=STOPWORDS, return_ids=False, show_progress=False), show_progress=False
    )
    query = bm25s.tokenize(
        "the parrot Admiral and the lighthouse", stopwords=STOPWORDS, return_ids=False, show_progress=False
    )
    np.testing.assert_allclose(result.lexical_scores, library.get_scores(query[0]), rtol=1e-6)
    assert result.question_terms == ("parrot", "admiral", "lighthouse")
    assert {h.chunk.document for h in result.lexical} <= {"parrot", "keeper"}
    assert all(h.score > 0 for h in result.lexical)


def test_reciprocal_rank_fusion_by_hand():
    dense = ranks_of(np.array([0.9, 0.1, 0.5]))
    assert dense.tolist() == [1, 3, 2]
    fused = reciprocal_rank_fusion(dense, np.array([0, 1, 2]), k=60)
    np.testing.assert_allclose(fused, [1 / 61, 1 / 63 + 1 / 61, 1 / 62 + 1 / 62])
    assert ranks_of(np.array([1.0, 1.0, 2.0])).tolist() == [2, 3, 1]  # ties by position


def test_a_question_of_stop_words_or_nothing_gets_a_sentence(tiny, gpt2_index):
    with pytest.raises(InputError, match="stop-words"):
        search(tiny["gpt2"], gpt2_index, "Is it the one of them that was there?", k=3)
    with pytest.raises(InputError, match="empty"):
        search(tiny["gpt2"], gpt2_index, "  ", k=3)


def test_disagreements_are_the_chunks_in_one_top_k_only(tiny, gpt2_index):
    result = search(tiny["gpt2"], gpt2_index, "saffron buns baker", k=2)
    rows = disagreements(result)
    dense = {h.chunk.index for h in result.dense}
    lexical = {h.chunk.index for h in result.lexical}
    assert {(d.chunk.index, d.found_by) for d in rows} == (
        {(i, "dense") for i in dense - lexical} | {(i, "lexical") for i in lexical - dense}
    )
    assert result.overlap == len(dense & lexical) / 2


def test_the_map_puts_the_question_last_and_marks_the_retrieved(tiny, gpt2_index):
    result = search(tiny["gpt2"], gpt2_index, "Who keeps the lighthouse?", k=2)
    m = retrieval_map(gpt2_index, result)
    assert m.coords.shape == (len(gpt2_index.chunks) + 1, 2)
    assert sorted(m.chunk_indices[m.retrieved].tolist()) == sorted(h.chunk.index for h in result.dense)
    fig = passage_map(m.coords, list(m.labels), m.retrieved, result.question, "tiny-gpt2 · map")
    assert [t.name for t in fig.data] == ["other passages", "retrieved", "the question"]
    assert len(fig.data[1].x) == 2 and fig.data[2].x[0] == pytest.approx(m.coords[-1, 0])


# ---------------------------------------------------------------- the index cache


def test_the_index_is_built_once_and_found_the_second_time(tiny):
    cache = IndexCache()
    first = cache.get(tiny["bert"], FACTS, Chunking(8, 2), layer=1)
    second = cache.get(tiny["bert"], FACTS, Chunking(8, 2), layer=1)
    assert not first.cached and second.cached and second.index is first.index
    assert cache.hits == 1 and cache.misses == 1
    other_layer = cache.get(tiny["bert"], FACTS, Chunking(8, 2), layer=2)
    assert not other_layer.cached and first.index.build_seconds > 0


def test_a_stopped_build_returns_the_chunks_so_far_and_is_not_cached(tiny):
    cache = IndexCache()
    docs = [Document(f"d{i}", " ".join(["word"] * 400)) for i in range(3)]
    stopped = cache.get(tiny["gpt2"], docs, Chunking(4, 0), layer=1, should_stop=lambda: True)
    assert not stopped.index.complete and 0 < len(stopped.index.chunks) < 300
    assert len(stopped.index.embeddings) == len(stopped.index.chunks) and len(cache) == 0


# ---------------------------------------------------------------- generation


def test_prompt_spans_point_at_the_passages_and_the_question():
    prompt = build_prompt("Who?", ["first passage", "second"], "Context: {context}\nQ: {question}\nA:")
    assert [prompt.text[a:b] for a, b in prompt.passage_spans] == ["first passage", "second"]
    assert prompt.text[slice(*prompt.question_span)] == "Who?"
    reversed_ = build_prompt("Who?", ["p"], "{question} (see {context})")
    assert reversed_.text == "Who? (see p)" and reversed_.passage_spans == ((10, 11),)


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_generation_with_and_without_passages(tiny, name):
    lm = tiny[name]
    question = PRESETS[0][0]
    passages = ["Edwin Castellan keeps the light.", "Tobias Wren bakes buns."]  # short: tiny models read 128 tokens
    result = compare_generation(lm, question, passages, new_tokens=4, top_n=5)
    closed, opened = result.closed_book, result.open_book
    assert closed.prompt.text == question and opened.prompt.text.endswith(question)
    layers = lm.spec.n_layers
    assert opened.passage_share.shape[1] == layers and opened.passage_share.shape == opened.question_share.shape
    assert np.all(closed.passage_share == 0) and np.all(opened.passage_share > 0)
    total = opened.passage_share + opened.question_share
    assert np.all(total <= 1 + 1e-5)
    assert opened.head_passage_share.shape == (layers, lm.spec.n_heads)
    np.testing.assert_allclose(opened.head_passage_share.mean(axis=1), opened.passage_share.mean(axis=0), atol=1e-5)
    assert len(opened.next_probs) == 5 and sorted(opened.next_probs, reverse=True) == list(opened.next_probs)
    # the first step's distribution is the trace's: the most probable token is the first one generated
    if lm.spec.adapter.continues_prompt:
        assert opened.generated[0] == opened.next_labels[0]
        assert 0 < len(opened.generated) <= 4


def test_generation_needs_a_generating_model_and_passages(tiny):
    with pytest.raises(InputError, match="BERT-style encoder"):
        compare_generation(tiny["bert"], "The keeper is", ["p"])
    with pytest.raises(InputError, match="search first"):
        compare_generation(tiny["gpt2"], "The keeper is", [])


def test_passage_attention_share_by_hand(tiny):
    lm = tiny["gpt2"]
    result = compare_generation(lm, "The baker is", ["Tobias Wren bakes buns."], new_tokens=2)
    opened = result.open_book
    trace = run(lm, opened.prompt.text, generate=2)
    n = trace.meta["prompt_tokens"]
    a, b = opened.prompt.passage_spans[0]
    keys = [i for i, t in enumerate(trace.tokens["input"][:n]) if t.start < b and a < t.end]
    by_hand = trace.attentions["self"][:, :, n - 1, keys].sum(axis=-1).mean(axis=1)  # (L,) for the first new token
    np.testing.assert_allclose(opened.passage_share[0], by_hand, atol=1e-5)


# ---------------------------------------------------------------- figures


def test_figures_carry_the_data_and_escape_model_text():
    bars = score_bars(["</s> keeper", "baker"], [0.9, 0.5], "tiny-t5 · top passages")
    assert list(bars.data[0].x) == [0.9, 0.5] and "&lt;/s&gt;" in bars.data[0].y[0]
    ranks = rank_comparison(["a", "b", "c"], [1, 2, 3], [2, 0, 1], "ranks", k=2)
    assert [list(t.y) for t in ranks.data] == [[1, 2], [2, 4], [3, 1]]
    pair = next_token_pair({"␣a": 0.5, "<pad>": 0.2}, {"␣Edwin": 0.6, "␣a": 0.1}, "next token")
    assert [t.name for t in pair.data] == ["without retrieval", "with retrieval"]
    assert list(pair.data[1].x) == [0.6, 0.1, 0.0] and "&lt;pad&gt;" in pair.data[0].y
    lines = share_lines(np.array([[0.2, 0.4], [0.4, 0.6]]), np.array([[0.1, 0.1], [0.3, 0.1]]), "shares")
    np.testing.assert_allclose(lines.data[0].y, [0.3, 0.5])
    np.testing.assert_allclose(lines.data[1].y, [0.2, 0.1])
    heat = share_heatmap(np.array([[0.2, 0.4]]), ["</s>"], "tiny-t5 · shares")
    assert np.asarray(heat.data[0].z).shape == (1, 2)
    text = json.dumps([f.to_plotly_json() for f in (bars, pair, heat)], default=lambda v: repr(np.asarray(v).tolist()))
    assert "</s>" not in text and "<pad>" not in text
    with pytest.raises(ValueError):
        score_bars(["a"], [0.1, 0.2])

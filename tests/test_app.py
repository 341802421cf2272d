"""App tier: launch the Gradio app on loopback and call its endpoints with gradio_client."""

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from explorer.analysis.decoding.generate import sample
from explorer.analysis.decoding.sampling import DecodingSettings
from tests.plotly_json import array, plot_data


def test_the_app_exposes_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    views = {"/attention", "/attention_grid", "/token_links", "/head_statistics", "/generation_attention"}
    assert {"/analyze", "/tokenize", "/next_token", "/strategies", "/logit_lens", *views} <= set(endpoints)


@pytest.mark.parametrize("name", ["gpt2", "bert", "t5"])
def test_analyze_then_tokens_and_attention_for_each_family(client, tiny_dir, name):
    status = client.predict(str(tiny_dir[name]), "The tiger jumped out of a tree.", "", api_name="/analyze")
    assert "⚠️" not in status and "layers" in status
    _, _, _, table = client.predict(str(tiny_dir[name]), "The tiger jumped out of a tree.", api_name="/tokenize")
    shown = [row[1] for row in table["data"]]
    assert any("tiger" in piece or "ti" in piece for piece in shown)
    kind = "cross" if name == "t5" else "self"
    weights = array(plot_data(client.predict(kind, 1, 2, "weights", api_name="/attention"))[0]["z"])
    assert weights.ndim == 2 and min(weights.shape) > 1
    rows = np.nan_to_num(weights).sum(axis=1)  # masked cells are NaN
    np.testing.assert_allclose(rows, 1.0, atol=1e-3)


@pytest.mark.parametrize(
    "model, text, expected",
    [
        ("no such model!", "hello", "Unknown model"),
        ("someone/not-cached", "hello", "no network"),
        (None, "", "empty"),
        (None, "   \n ", "empty"),
    ],
)
def test_bad_input_gets_one_clear_sentence(client, tiny_dir, model, text, expected):
    status = client.predict(model or str(tiny_dir["gpt2"]), text, "", api_name="/analyze")
    assert status.startswith("⚠️") and expected in status
    assert "Traceback" not in status


def test_odd_unicode_and_binary_looking_text_are_analysed(client, tiny_dir):
    for text in ["😀👩‍👩‍👧 e\u0301 \x00\x01\x7f \u200b", "".join(chr(i) for i in range(1, 300))]:
        status = client.predict(str(tiny_dir["gpt2"]), text, "", api_name="/analyze")
        assert "⚠️" not in status, status


def test_scores_rollout_statistics_and_generation_views(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), "To be, or not to be, that is the question.", "", api_name="/analyze")
    scores = array(plot_data(client.predict("self", 1, 0, "scores", api_name="/attention"))[0]["z"])
    upper = np.triu(np.ones(scores.shape, bool), k=1)
    assert np.all(np.isnan(scores[upper])) and np.all(np.isfinite(scores[~upper]))  # masked cells drawn grey
    rollout = array(plot_data(client.predict("self", 1, 0, "rollout", api_name="/attention"))[0]["z"])
    np.testing.assert_allclose(np.nan_to_num(rollout).sum(axis=1), 1.0, atol=1e-3)
    figure, table = client.predict("self", "previous_token", api_name="/head_statistics")
    assert len(table["data"]) == 2 * 4  # layers x heads of the tiny model
    assert array(plot_data(figure)[0]["z"]).shape == (2, 4)
    step, text, figure = client.predict(1, 1, 5, 3, api_name="/generation_attention")
    assert step["maximum"] == 5 and step["value"] == 3
    assert "**[" in text  # the token of this step is highlighted


def test_generation_view_explains_itself_for_other_families(client, tiny_dir):
    client.predict(str(tiny_dir["bert"]), "The tiger jumped.", "", api_name="/analyze")
    _, text, _ = client.predict(1, 1, 5, 3, api_name="/generation_attention")
    assert "decoder-only models" in text and "Model box" in text


def test_grid_and_token_links_then_no_view_change_reruns_the_model(client, ctx, tiny_dir):
    client.predict(str(tiny_dir["t5"]), "The tiger jumped out of a tree.", "", api_name="/analyze")
    runs = ctx.cache.misses
    choices, grid = client.predict("cross", api_name="/attention_grid")
    assert len(plot_data(grid)) == 1 and "L1 H3" in [c[0] for c in choices["choices"]]
    _, _, links = client.predict("cross", 1, 2, 3, [], api_name="/token_links")
    lines = [t for t in plot_data(links) if t.get("mode") == "lines"]
    assert lines and all(y == 3 for t in lines for y in t["y"][0::3])  # every line starts at query 3
    for layer, head in [(0, 0), (1, 3), (0, 2)]:
        client.predict("encoder_self", layer, head, "weights", api_name="/attention")
    client.predict("decoder_self", "entropy", api_name="/head_statistics")
    assert ctx.cache.misses == runs


def test_live_tokenization_escapes_html_and_counts(client, tiny_dir):
    counts, html, _, table = client.predict(str(tiny_dir["gpt2"]), "Hi <script>x</script>\n", api_name="/tokenize")
    assert "<script>" not in html and "&lt;" in html and "↵" in html
    assert "characters" in counts and len(table["data"]) == int(counts.split("**")[1])


def test_compare_tokenizers_reports_each_and_explains_missing_ones(client, tiny_dir):
    table, html = client.predict(
        str(tiny_dir["gpt2"]), "Hello world", ["current model", "gpt2-bpe"], "someone/not-cached",
        api_name="/compare_tokenizers",
    )  # fmt: skip
    rows = {r[0]: r for r in table["data"]}
    assert rows["gpt2-bpe"][1] == 2  # GPT-2: Hello, Ġworld
    assert "no network" in html


def test_bpe_replay_matches_the_tokenizer(client, tiny_dir):
    note, steps = client.predict(str(tiny_dir["bert"]), "Hello", "Hello world", api_name="/bpe_replay")
    assert "GPT-2" in note and "✓" in note  # a WordPiece model falls back to GPT-2's BPE, and says so
    assert steps["data"][-1][-1] == "Ġworld"


def test_train_your_own_bpe_and_its_bounds(client):
    note, merges = client.predict("Genesis 1–10 (KJV, 32 kB)", "", 400, api_name="/train_bpe")
    assert "merges" in note and len(merges["data"]) == 100
    note, merges = client.predict("pasted text", "", 400, api_name="/train_bpe")
    assert note.startswith("⚠️") and merges["data"] == []


def test_next_token_distribution_through_the_settings(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), "To be, or not to be", "", api_name="/analyze")
    note, figure = client.predict(10, "probabilities", 0.8, 20, 0.9, 0.0, 1.0, False, api_name="/next_token")
    stages = [t["name"] for t in plot_data(figure)]
    assert stages == ["model", "temperature", "top-k", "top-p"] and "entropy" in note
    note, _ = client.predict(10, "probabilities", 1.0, 0, 1.0, 0.0, 1.0, False, api_name="/next_token")
    assert f"**{400:,}** of {400:,} tokens survive" in note  # no filter: the whole tiny vocabulary


def test_step_by_step_generation_with_undo_and_a_chosen_candidate(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), "To be, or not to be", "", api_name="/analyze")
    knobs = (1.0, 0, 1.0, 0.0, 1.0, True)  # greedy
    client.predict(None, 0, *knobs, api_name="/step_start")
    _, table, candidates = client.predict(None, 0, *knobs, api_name="/step_next")
    assert len(table["data"]) == 1 and table["data"][0][2] == "greedy" and table["data"][0][4] == 1
    third = candidates["choices"][2][1]  # replace the greedy token by the third most probable one
    _, table, _ = client.predict(third, 0, *knobs, api_name="/step_take")
    assert len(table["data"]) == 1 and table["data"][0][2] == "clicked" and table["data"][0][4] == 3
    client.predict(None, 0, *knobs, api_name="/step_next")
    _, table, _ = client.predict(None, 0, *knobs, api_name="/step_undo")
    assert len(table["data"]) == 1


def test_strategies_compare_greedy_samples_and_a_beam_tree(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), "To be, or not to be", "", api_name="/analyze")
    table, tree = client.predict(5, 2, 3, 1.0, 0, 1.0, 0, 1.0, 0.0, 1.0, False, api_name="/strategies")
    names = [row[0] for row in table["data"]]
    assert names[:3] == ["greedy", "sample 1", "sample 2"] and any(n.startswith("beam 1") for n in names)
    statuses = {t.get("name") for t in plot_data(tree)}
    assert {"kept", "pruned"} <= statuses


def test_logit_lens_and_the_encoder_explains_itself(client, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), "To be, or not to be", "", api_name="/analyze")
    grid = plot_data(client.predict(api_name="/logit_lens"))[0]
    assert array(grid["z"]).shape[0] == 3  # embeddings + 2 layers
    client.predict(str(tiny_dir["bert"]), "To be, or not to be", "", api_name="/analyze")
    note, _ = client.predict(10, "probabilities", 1.0, 0, 1.0, 0.0, 1.0, False, api_name="/next_token")
    assert note.startswith("⚠️") and "encoder" in note


def test_fill_in_for_an_encoder_and_an_encoder_decoder(client, tiny_dir):
    client.predict(str(tiny_dir["bert"]), "the tiger jumped out of a tree.", "", api_name="/analyze")
    note, figure = client.predict(2, 12, api_name="/fill_in")  # mask the third token
    assert "**[" in note and len(plot_data(figure)[0]["x"]) == 10
    client.predict(str(tiny_dir["t5"]), "The tiger <extra_id_0> out of a tree.", "", api_name="/analyze")
    note, _ = client.predict(None, 6, api_name="/fill_in")
    # a random model fills with noise; the text is escaped Markdown (the bracket marks the filled span)
    assert note.startswith("The tiger \\[") and "The model wrote" in note
    client.predict(str(tiny_dir["gpt2"]), "The tiger jumped.", "", api_name="/analyze")
    note, _ = client.predict(None, 6, api_name="/fill_in")
    assert note.startswith("⚠️")


def test_write_streams_the_sampled_text(client, ctx, tiny_dir):
    client.predict(str(tiny_dir["gpt2"]), "To be, or not to be", "", api_name="/analyze")
    knobs = (0.9, 20, 0.95, 0.0, 1.0, False)
    job = client.submit(40, 4, *knobs, api_name="/write")
    job.result()
    updates = job.outputs()
    written, stats = updates[-1]
    lm = ctx.pool.get(str(tiny_dir["gpt2"]))
    prompt = lm.tokenizer("To be, or not to be")["input_ids"]
    expected = sample(lm, prompt, DecodingSettings(0.9, 20, 0.95, 0.0, 1.0), 1, 40, seed=4)[0]
    assert [part["token"] for part in written][0] == "To be, or not to be"
    assert "".join(part["token"] for part in written[1:]) == (expected.text or " …")
    assert stats.startswith(f"{len(expected.new_ids)} of 40 tokens")
    with pytest.raises(AppError, match="takes a number from 1 to 512, not 600"):  # the input gate checks the range
        client.predict(600, 4, *knobs, api_name="/write")


def test_a_component_between_tabs_and_tab_is_refused_at_build_time():
    import types

    import gradio as gr

    from explorer.ui.app import check_tabs_hold_only_tabs

    with gr.Blocks(), gr.Tabs() as tabs:
        with gr.Tab("A"):
            gr.State(None)
        check_tabs_hold_only_tabs(tabs, types.ModuleType("inside"))  # a State inside its tab is fine
        gr.State(None)
        with pytest.raises(TypeError, match="State beside its gr.Tab"):
            check_tabs_hold_only_tabs(tabs, types.ModuleType("stray"))


def test_the_page_preloads_gradios_plotly_bundle():
    """The first figure does not wait for 4.6 MB of JavaScript to be fetched when it mounts."""
    from pathlib import Path

    import gradio as gr

    from explorer.ui.app import preload_figures

    head = preload_figures()
    assert head.startswith('<link rel="modulepreload" href="assets/PlotlyPlot-')
    name = head.split('href="assets/')[1].split('"')[0]
    assert (Path(gr.__file__).parent / "templates" / "frontend" / "assets" / name).is_file()

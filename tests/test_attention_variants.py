"""Multi-head, grouped-query and multi-query attention: the cache of a real forward pass of a tiny random Llama
model of each kind, measured, equals the formula; the loaded model's and the presets' variants; the figure."""

import pytest

from explorer.analysis.inference import attention_variants as av
from explorer.analysis.inference.kv_cache import CacheShape, formula_bytes
from explorer.core.errors import InputError
from explorer.plots.inference import LOADED_SUFFIX, variant_bars


@pytest.mark.parametrize(
    "variant, kv_heads", [(av.MHA, 8), (av.GQA, 2), (av.MQA, 1)]
)  # 8 query heads: heads, heads / 4, 1
def test_each_variant_caches_what_the_formula_says(variant, kv_heads):
    m = av.measure_variant(variant, heads=8, layers=3, head_dim=16, positions=20)
    assert m.kv_heads == kv_heads and m.cached_shape == (1, kv_heads, 20, 16)  # the model really has these heads
    assert m.measured_bytes == m.formula_bytes == formula_bytes(3, kv_heads, 16, 20, 4)


def test_the_cache_shrinks_by_the_group_size_as_measured():
    measured = {m.variant: m.measured_bytes for m in av.measure_variants(heads=12, positions=10)}
    assert measured[av.MHA] == 4 * measured[av.GQA] == 12 * measured[av.MQA]  # 12, 3 and 1 kv-heads


def test_grouped_kv_heads_divide_the_heads_and_keep_a_models_own_groups():
    assert [av.grouped_kv_heads(h) for h in (2, 4, 12, 25, 32, 7)] == [None, 2, 3, 5, 8, None]
    assert av.kv_heads_of(av.GQA, 32, built_kv_heads=4) == 4  # a grouped model keeps its own groups
    assert av.built_variant(CacheShape(2, 1, 64, 8)) == av.MQA
    with pytest.raises(InputError, match="groups"):
        av.measure_variant(av.GQA, heads=7)
    with pytest.raises(InputError, match="positions"):
        av.measure_variant(av.MHA, positions=0)


def test_the_loaded_model_and_the_presets_each_mark_how_they_were_built():
    rows = av.compare_variants("tiny-gpt2", CacheShape(layers=4, kv_heads=4, head_dim=64, heads=4), 512)
    loaded = [r for r in rows if r.loaded]
    assert [(r.variant, r.kv_heads) for r in loaded] == [(av.MHA, 4), (av.GQA, 2), (av.MQA, 1)]
    assert [r.built for r in loaded] == [True, False, False]
    assert loaded[0].nbytes == 2 * 4 * 4 * 64 * 512 * 2  # float16
    llama3 = {r.variant: r for r in rows if r.model.startswith("Llama-3")}
    assert llama3[av.GQA].built and llama3[av.GQA].kv_heads == 8 and llama3[av.MHA].nbytes == 4 * llama3[av.GQA].nbytes
    assert {r.model for r in rows} == {"tiny-gpt2", *av.PRESETS}


def test_variant_figure_has_a_trace_per_variant_and_labels_the_loaded_model():
    rows = av.compare_variants("tiny-gpt2", CacheShape(4, 4, 64, 4), 1024)
    fig = variant_bars([r.model for r in rows], [r.variant for r in rows], [r.nbytes / 2**20 for r in rows],
                       [r.built for r in rows], "tiny-gpt2", "title")  # fmt: skip
    assert [t.name for t in fig.data] == list(av.VARIANTS)
    mha = fig.data[0]
    assert mha.y[0] == "tiny-gpt2<br>" + LOADED_SUFFIX.strip() and mha.marker.line.width[0] > 0  # built as MHA
    assert mha.x[0] == pytest.approx(2 * 4 * 4 * 64 * 1024 * 2 / 2**20)
    assert fig.layout.xaxis.type == "log" and not any(fig.data[2].marker.line.width)  # no preset is MQA
    assert max(len(y) for t in fig.data for y in t.y if "<br>" not in y) <= 14  # short enough for a phone
    assert " (as built)" in [c[1] for c in mha.customdata]

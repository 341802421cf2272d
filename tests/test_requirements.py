"""A tab that needs what the current model cannot do says so at its top, in the family adapter's one sentence."""

import gradio as gr

from explorer.core.family import FINE_TUNE, GENERATE, LM_HEAD
from explorer.ui.app import build_app, requirement_notices
from explorer.ui.context import AppContext, Selection
from explorer.ui.shell import Shared


def test_notices_name_what_the_model_cannot_do_and_hide_when_it_can():
    ctx = AppContext()
    requirements = [(None, (FINE_TUNE,)), (None, (GENERATE,)), (None, (LM_HEAD,))]
    bert = requirement_notices(ctx, Selection("tiny-bert", "The [MASK] sat."), requirements)
    assert [u["visible"] for u in bert] == [True, True, False]
    assert "tiny\\-bert" in bert[0]["value"] and "BERT\\-style encoder" in bert[0]["value"]
    assert bert[0]["value"].startswith("⚠️")
    gpt = requirement_notices(ctx, Selection("tiny-gpt2", "The cat sat."), requirements)
    assert [u["visible"] for u in gpt] == [False, False, False]
    t5 = requirement_notices(ctx, Selection("tiny-t5", "The cat sat."), requirements)
    assert [u["visible"] for u in t5] == [True, False, False]
    assert [u["visible"] for u in requirement_notices(ctx, None, requirements)] == [False] * 3


def test_the_tabs_that_need_a_capability_declare_it():
    declared = {}
    original = Shared.requires

    def spy(self, *capabilities):
        declared.setdefault(self.building, []).extend(capabilities)
        return original(self, *capabilities)

    Shared.requires = spy
    try:
        demo = build_app(AppContext())
    finally:
        Shared.requires = original
    assert declared == {"lora": [FINE_TUNE], "kv_cache": [GENERATE], "interventions": [LM_HEAD],
                        "inference": [LM_HEAD, GENERATE], "training": [FINE_TUNE], "attribution": [LM_HEAD],
                        "retrieval": [GENERATE]}  # fmt: skip
    notices = [
        b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "explorer-requires" in (b.elem_classes or [])
    ]
    assert len(notices) == 8 and not any(n.visible for n in notices)

"""The training recipe's parts that need no corpus: warm start across tokenizers, the time budget,
documents, deduplication and the held-out split (tiny random-weight models, real tokenizers); the decoder's
copy start on the bundled tiny-gpt2, whose trained positions it needs."""

import copy
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from explorer.core import objectives, tokenizer_training
from explorer.core.settings import BUNDLED_MODELS
from explorer.training import corpus, recipes, warm_start
from explorer.training.corpus import MODERN_SAMPLE
from tests import tiny_models
from tests.tiny_models import TEXT


def tiny_gpt2(tok, positions=64):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=positions, n_embd=16, n_layer=1, n_head=2,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    return GPT2LMHeadModel(cfg)


def test_warm_start_keeps_layers_and_shared_tokens_and_builds_new_tokens_from_their_pieces():
    old_tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    new_tok = tokenizer_training.train_byte_level_bpe([TEXT + " tigers jumped thirsty" * 20], 340)
    old, new = tiny_gpt2(old_tok), tiny_gpt2(new_tok)
    stats = warm_start.transfer(new, new_tok, old, old_tok)
    assert torch.equal(new.transformer.h[0].mlp.c_fc.weight, old.transformer.h[0].mlp.c_fc.weight)
    assert torch.equal(new.transformer.wpe.weight, old.transformer.wpe.weight)
    old_vocab, new_vocab = old_tok.get_vocab(), new_tok.get_vocab()
    shared = [t for t in new_vocab if t in old_vocab]
    fresh = [t for t in new_vocab if t not in old_vocab]
    assert shared and fresh and stats["shared_tokens"] == len(shared) and stats["new_tokens"] == len(fresh)
    wte_old, wte_new = old.transformer.wte.weight, new.transformer.wte.weight
    for token in shared[:20]:
        assert torch.equal(wte_new[new_vocab[token]], wte_old[old_vocab[token]])
    for token in fresh[:20]:  # e.g. "Ġtigers": the mean of the old pieces of " tigers"
        pieces = old_tok(new_tok.convert_tokens_to_string([token]), add_special_tokens=False)["input_ids"]
        assert torch.allclose(wte_new[new_vocab[token]], wte_old[pieces].mean(0))
    assert new.lm_head.weight.data_ptr() == new.transformer.wte.weight.data_ptr()  # still tied


def test_warm_start_model_predicts_like_the_old_one_on_text_both_cut_alike():
    old_tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    new_tok = tokenizer_training.train_byte_level_bpe([TEXT + " tigers" * 20], 320)
    old, new = tiny_gpt2(old_tok), tiny_gpt2(new_tok)
    warm_start.transfer(new, new_tok, old, old_tok)
    old.eval(), new.eval()
    text = " the earth"
    old_ids = old_tok(text, return_tensors="pt")["input_ids"]
    new_ids = new_tok(text, return_tensors="pt")["input_ids"]
    assert old_tok.convert_ids_to_tokens(old_ids[0].tolist()) == new_tok.convert_ids_to_tokens(new_ids[0].tolist())
    old_hidden = old(old_ids, output_hidden_states=True).hidden_states[-1]
    new_hidden = new(new_ids, output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(old_hidden, new_hidden, atol=1e-5)  # same pieces, same vectors, same layers


def test_time_budget_stops_training_and_decays_the_learning_rate():
    tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    model = tiny_gpt2(tok)
    stream = objectives.token_stream(tok, [TEXT] * 4, tok.eos_token_id)
    recipe = recipes.Recipe("decoder", "byte-level BPE", batch=2, seq_len=16, warmup=2)
    lines = []
    losses = recipes.train(
        model, lambda rng: objectives.causal_lm_batch(stream, 2, 16, rng), 100_000, recipe, lines.append, seconds=1.0
    )
    assert 0 < len(losses) < 100_000
    assert any(line.startswith("time budget of 1 s spent after") for line in lines)
    reported = [r["step"] for r in map(recipes.read_step_line, lines) if r]
    assert reported[-1] == len(losses) - 1  # the last step run is in the log, as a run of set steps ends
    assert recipes.lr_at(10, 100_000, recipe, time_progress=1.0) == recipe.lr * 0.1
    assert recipes.lr_at(10, 100_000, recipe, time_progress=0.0) > 0.99 * recipe.lr


def loop_penalty_run() -> tuple[list[float], list[str]]:
    """Four steps at learning rate 0 of a tiny decoder with the loop penalty: their losses and the training log."""
    tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    model = tiny_gpt2(tok, positions=128)
    stream = objectives.token_stream(tok, [TEXT] * 4, tok.eos_token_id)
    batch = objectives.causal_lm_batch(stream, 2, 16, np.random.default_rng(0))
    recipe = recipes.Recipe("decoder", "byte-level BPE", lr=0.0, warmup=0, dropout=0.0, unlikelihood=1.0)
    recipes.set_dropout(model, 0.0)
    lines = []

    def prefixes(rng):
        return torch.from_numpy(objectives.random_windows(stream, 2, 8, rng))

    return recipes.train(model, lambda rng: batch, 4, recipe, lines.append, next_prefixes=prefixes), lines


def test_training_with_the_loop_penalty_reports_the_objectives_own_loss_and_the_looped_share():
    """The penalty's steps once reported objective + penalty, so a stage with it looked worse than one without."""
    losses, lines = loop_penalty_run()
    assert losses == pytest.approx([losses[0]] * 4, abs=1e-6)  # lr 0: the same loss, penalty steps or not
    assert "looped" in lines[-1]


def test_a_run_with_the_loop_penalty_stopped_at_a_checkpoint_is_resumed_from_its_log(tmp_path):
    """--resume read a stopped run's time as the line's last field but one: "looped", for the penalty's lines."""
    from explorer.training.__main__ import previous_run

    _, lines = loop_penalty_run()
    last = lines[-1].split()
    (tmp_path / "train.log").write_text("\n".join([*lines, "checkpoint at step 3"]) + "\n")
    previous = previous_run(tmp_path, recipes.recipe_for("decoder"))
    assert previous["steps"] == 3 and previous["stopped_early"]
    assert previous["wall_time_s"] == float(last[last.index("s") - 1])
    assert previous["final_train_loss"] == float(last[last.index("loss") + 1])


def test_marked_loss_is_the_span_ends_share_of_the_mean_loss():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[0, 1, 2, -100]])  # the last position is padding
    marks = torch.tensor([2, 7])
    assert objectives.marked_loss(logits, labels, marks).item() == pytest.approx(-math.log(0.6) / 3)
    assert objectives.marked_loss(logits, labels, torch.tensor([0, 1, 2])).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[0, :3], labels[0, :3]).item()
    )


def tiny_t5_batch():
    """A tiny random T5, its tokenizer and one span-corruption batch of TEXT."""
    model, tok = tiny_models.build("t5")
    recipes.set_dropout(model, 0.0)
    stream = objectives.token_stream(tok, [TEXT] * 4, tok.eos_token_id)
    return model, tok, objectives.span_corruption_batch(stream, 4, 32, np.random.default_rng(0), tok)


def test_end_weight_reports_the_plain_loss_and_teaches_where_answers_end():
    model, tok, batch = tiny_t5_batch()
    ends = objectives.span_ends(tok)
    assert set(ends.tolist()) >= {tok.eos_token_id, tok.convert_tokens_to_ids("<extra_id_0>")}
    still = recipes.Recipe("encoder_decoder", "unigram", lr=0.0, warmup=0, dropout=0.0, end_weight=4.0)
    plain = recipes.train(model, lambda rng: batch, 1, dataclasses.replace(still, end_weight=0.0), lambda m: None)
    weighted = recipes.train(model, lambda rng: batch, 1, still, lambda m: None, span_ends=ends)
    assert weighted == pytest.approx(plain)  # the log shows the objective's own loss, weighted or not

    def end_loss_after(end_weight: float) -> float:
        trained = copy.deepcopy(model)
        recipe = dataclasses.replace(still, lr=3e-3, end_weight=end_weight, optimizer="adamw")
        recipes.train(trained, lambda rng: batch, 5, recipe, lambda m: None, span_ends=ends)
        with torch.no_grad():
            return objectives.marked_loss(trained(**batch).logits, batch["labels"], ends).item()

    assert end_loss_after(4.0) < end_loss_after(0.0)


@torch.no_grad()
def test_tokens_never_seen_in_training_get_the_mean_row_and_cannot_win_greedy_decoding():
    tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    model = tiny_gpt2(tok, positions=128)
    stream = objectives.token_stream(tok, [TEXT], tok.eos_token_id)
    unseen = sorted(set(range(len(tok))) - set(stream.tolist()))
    weight = model.get_input_embeddings().weight
    ids = torch.from_numpy(stream[:12])[None]
    state = model.transformer(ids).last_hidden_state[0, -1]
    weight[unseen[0]] = state * 100 / state.norm() ** 2  # an unseen row grown along a state: its logit there is 100
    assert model(ids).logits[0, -1].argmax().item() == unseen[0]
    assert recipes.settle_unseen_tokens(model, stream) == len(unseen) > 0
    seen = sorted(set(stream.tolist()))
    assert torch.allclose(weight[unseen], weight[seen].mean(0).expand(len(unseen), -1))
    assert torch.equal(model.lm_head.weight[unseen[0]], weight[unseen[0]])  # tied: the output row too
    logits = model(ids).logits[0]
    assert (logits[:, unseen].max(-1).values < logits.max(-1).values).all()


def test_documents_dedup_and_held_out_split_are_stable():
    paragraphs = [f"Paragraph {i} " + " ".join(["word"] * 50) for i in range(40)]
    docs = corpus._documents(paragraphs, size=600)
    assert "\n".join(docs).split("\n") == paragraphs
    assert all(len(d) >= 600 for d in docs[:-1])
    source = corpus.Source("test", "here", "public domain", lambda: docs + [docs[0].upper()])
    built = corpus.build_corpus([source])
    assert len(built.train) + len(built.held_out) == len(docs)  # the upper-case copy is a duplicate
    assert all(corpus._held_out(d) for d in built.held_out)
    assert not any(corpus._held_out(d) for d in built.train)
    assert set(built.held_out).isdisjoint(built.train)


def test_blocked_words_drop_their_paragraph_only():
    assert corpus._clean("A fine day.\nThey called him a wop.\nThe end.") == "A fine day.\nThe end."


def write_wordnet(folder: Path) -> None:
    """A small WordNet database in its own format: each data file opens with licence lines (two spaces first), then
    one synset per line: offset, topic file, part of speech, word count (hex), words with their sense ids, pointers,
    then " | " and the definition."""
    licence = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    lines = {
        "noun": [
            "08932568 15 n 04 Paris 0 City_of_Light 0 French_capital 0 capital_of_France 0 001 @i 08691669 n 0000 | "
            "the capital and largest city of France; and international center of culture and commerce  ",
            "02129604 05 n 02 tiger 0 Panthera_tigris 0 000 | large feline of forests in most of Asia  ",
            "02127808 05 n 01 Panthera 0 000 | type genus of the Felidae: tigers; leopards; jaguars; lions  ",
            "01541922 05 n 02 Emberiza 0 genus_Emberiza 0 000 | Old World buntings  ",  # a taxon by its words
            "06282651 10 n 01 word_order 0 000 | the order of words in a text  ",  # not a taxon: not an animal or plant
            "10001000 18 n 01 lout 0 000 | (offensive) a person regarded as clumsy  ",
            "10002000 18 n 01 someone 0 001 ;u 06718862 n 0000 | a person of some group  ",  # filed as an ethnic slur
            "00101000 04 n 02 foul-up 0 fuckup 0 000 | an embarrassing mistake  ",  # an obscene word
            # twelve words (a count of 0c, hexadecimal) and a marker after a word
            "04000000 06 n 0c w1 0 w2 0 w3 0 w4 0 w5 0 w6 0 w7 0 w8 0 w9 0 w10 0 w11 0 w12(p) 0 000 | twelve names  ",
        ],
        "verb": [
            "01835496 38 v 01 travel 0 000 | change location; move, travel, or proceed, also metaphorically; "
            '"How fast does your new car go?"  '
        ],  # fmt: skip
        "adj": ['00001740 00 a 01 able(a) 0 000 | having the necessary means or skill; "able to swim"  '],
        "adv": ["00001837 02 r 02 barely 0 just_barely 0 000 | by a small margin!  "],
    }
    folder.mkdir()
    for pos, synsets in lines.items():
        (folder / f"data.{pos}").write_text(licence + "".join(f"{line}\n" for line in synsets), encoding="utf-8")


def test_wordnet_definitions_are_words_then_definition_without_taxa_or_insults(tmp_path):
    write_wordnet(tmp_path / "wordnet")
    docs = corpus.wordnet_definitions(tmp_path / "wordnet")
    assert docs == [
        "\n".join([
            'able: having the necessary means or skill; "able to swim"',  # adjectives, adverbs, nouns, verbs
            "barely, just barely: by a small margin!",
            "tiger, Panthera tigris: large feline of forests in most of Asia.",  # topic files 05 (animals), 06, 10, 15
            "w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, w12: twelve names.",
            "word order: the order of words in a text.",
            "Paris, City of Light, French capital, capital of France: the capital and largest city of France; "
            "and international center of culture and commerce.",
            'travel: change location; move, travel, or proceed, also metaphorically; "How fast does your new car go?"',
        ])
    ]  # fmt: skip


def test_wordnet_places_are_the_location_nouns_only(tmp_path):
    write_wordnet(tmp_path / "wordnet")
    assert corpus.wordnet_definitions(tmp_path / "wordnet", nouns_of=("15",)) == [
        "Paris, City of Light, French capital, capital of France: the capital and largest city of France; "
        "and international center of culture and commerce."
    ]


def test_a_document_one_source_leaves_out_comes_in_from_a_source_that_keeps_it():
    """The places source repeats WordNet's location documents; "wordnet" keeps half of them, and the other half (Paris,
    capital of France, among them) were once dropped from "places" too, as duplicates of documents never trained on."""
    docs = [f"Entry {i}: " + "word " * 30 for i in range(50)]
    some = corpus.Source("some", "here", "public domain", lambda: docs, keep_percent=0)
    every = corpus.Source("every", "here", "public domain", lambda: docs)
    built = corpus.build_corpus([some, every])
    trained = [d for d in docs if not corpus._held_out(d)]
    assert built.train == trained and built.sources == {"some": 0, "every": sum(map(len, trained))}
    assert corpus.build_corpus([every, every]).train == trained  # a document kept once is not trained twice


def test_an_added_sources_held_out_text_stays_out_of_the_held_out_figures(monkeypatch):
    docs = [f"Entry {i}: " + "word " * 30 for i in range(200)]
    extra = corpus.Source("extra", "here", "public domain", lambda: docs)
    monkeypatch.setitem(corpus.EXTRA_SOURCES, "extra", extra)
    built = corpus.build_corpus([extra])
    assert sum(map(corpus._held_out, docs)) >= 2  # 3% of 200: some are held out
    assert built.held_out == [] and len(built.train) == 200 - sum(map(corpus._held_out, docs))


def test_an_added_source_is_named_in_the_cards_training_line_and_its_command(tmp_path):
    from explorer.training.card import attention_start

    stages = [{"steps": 900, "lr": 6e-4}, {"steps": 1900, "lr": 2e-4, "add_source": ["wordnet"]}]
    assert "stage 2 read the corpus with WordNet 3.0 definitions added" in attention_start(stages)
    both = ["wordnet", "places"]
    later = [*stages, {"steps": 500, "lr": 4e-3, "add_source": both}, {"steps": 500, "lr": 1e-3, "add_source": both}]
    clause = attention_start(later)  # a third and a fourth stage with the same two sources share one clause
    assert clause.count("read the corpus") == 2
    assert "stages 3–4 read the corpus with WordNet 3.0 definitions and WordNet 3.0 places added" in clause
    commands = decoder_card_commands(tmp_path, stages)
    assert "--add-source" not in commands[0] and "--resume --lr 0.0002 --add-source wordnet" in commands[1]


def test_the_card_names_a_stages_end_weight_and_its_command_repeats_it(tmp_path):
    from explorer.training.card import attention_start

    stages = [{"steps": 900, "lr": 6e-4}, {"steps": 400, "lr": 2e-3, "end_weight": 2.0}]
    clause = attention_start(stages)
    assert (
        "in stage 2 the target's marks that end an answer or the output (sentinels and </s>) counted 3 times" in clause
    )
    commands = decoder_card_commands(tmp_path, stages)
    assert "--end-weight" not in commands[0] and "--end-weight 2.0" in commands[1]


def test_modern_sample_is_ordinary_modern_prose_and_never_in_the_old_corpus():
    sample = corpus.modern_sample()
    words = " ".join(sample).split()
    assert len(sample) >= 15 and len(words) >= 1200
    assert not any(w in words for w in ("thee", "thou", "hath", "doth", "unto"))
    old = corpus.old_held_out()
    assert old and not any(p[:60] in d for p in sample for d in old)


def test_draft_shape_is_a_small_tied_decoder_on_the_given_tokenizer():
    from explorer.core.loading import load_tokenizer

    tok = load_tokenizer("tiny-gpt2")
    draft = recipes.build_model("decoder", tok, dropout=0.0, shape="draft")
    bundled = recipes.build_model("decoder", tok)
    n_draft = sum(p.numel() for p in draft.parameters())
    assert 2e5 < n_draft < 1e6 < 5 * n_draft < sum(p.numel() for p in bundled.parameters())
    assert draft.config.vocab_size == len(tok) == bundled.config.vocab_size
    assert draft.lm_head.weight.data_ptr() == draft.transformer.wte.weight.data_ptr()
    assert draft.config.resid_pdrop == 0.0 and recipes.recipe_for("decoder", "draft").dropout == 0.0
    assert recipes.recipe_for("decoder") is recipes.RECIPES["decoder"]


def test_adafactor_moves_each_weight_by_its_own_scale_where_adamw_moves_all_alike():
    """T5 starts its embeddings at std 1 and its queries far smaller: AdamW's first step moves both by about
    the learning rate, so the queries by a far larger share of their size; Adafactor, the encoder-
    decoder recipe's optimizer, moves each by about the same share of its own size."""
    import copy as copying

    from tests.tiny_models import build

    model, _ = build("t5")  # its queries start at std 0.06, its embeddings at 1
    tok_ids = torch.randint(5, model.config.vocab_size, (4, 12))
    batch = {"input_ids": tok_ids, "attention_mask": torch.ones_like(tok_ids), "labels": tok_ids.flip(1)}
    shares = {}
    for optimizer in ("adamw", "adafactor"):
        copy = copying.deepcopy(model)
        weights = {"embeddings": copy.shared.weight, "queries": copy.encoder.block[0].layer[0].SelfAttention.q.weight}
        before = {k: w.detach().clone() for k, w in weights.items()}
        recipe = recipes.Recipe("encoder_decoder", "Unigram", lr=1e-2, warmup=0, dropout=0.0, optimizer=optimizer)
        recipes.train(copy, lambda rng: batch, 1, recipe, lambda line: None)
        used = batch["input_ids"].unique()  # the embedding rows the step touched
        shares[optimizer] = {
            k: ((w[used] - before[k][used]).norm() / before[k][used].norm()).item()
            if k == "embeddings"
            else ((w - before[k]).norm() / before[k].norm()).item()
            for k, w in weights.items()
        }
    adamw, ada = shares["adamw"], shares["adafactor"]
    assert adamw["queries"] / adamw["embeddings"] > 8  # AdamW: the small weights move far more, relatively
    assert ada["queries"] / ada["embeddings"] < 2  # Adafactor: alike


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5"])
def test_set_dropout_turns_off_every_dropout_of_a_loaded_model_and_its_config_says_so(kind):
    """A resumed stage with ``--dropout 0`` must train without dropout: a model in training mode then
    gives the same output twice. T5's attention keeps its rate as a float, not a Dropout module."""
    from tests.tiny_models import build

    model, _ = build(kind)
    ids = torch.randint(5, model.config.vocab_size, (2, 10))
    inputs = {"input_ids": ids, **({"decoder_input_ids": ids} if kind == "t5" else {})}
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(**inputs).logits, model(**inputs).logits)  # dropout on: two draws differ
    recipes.set_dropout(model, 0.0)
    assert torch.equal(model(**inputs).logits, model(**inputs).logits)
    fields = [f for f in recipes._DROPOUT_FIELDS if hasattr(model.config, f)]
    assert fields and all(getattr(model.config, f) == 0.0 for f in fields)


def test_a_cards_stages_keep_each_runs_dropout_and_warmup_and_the_card_names_them():
    """A resumed stage without dropout after a first run with it: the card said "dropout 0.0" for both; and the
    first run's warm-up (100) was written as the resumed one's (50)."""
    from explorer.training.__main__ import earlier_stages
    from explorer.training.card import per_stage

    first_run = {"steps": 7962, "lr": 0.01, "dropout": 0.1, "warmup": 100, "stages": [{"steps": 7962, "lr": 0.01}]}
    stages = [*earlier_stages(first_run), {"steps": 4000, "lr": 0.003, "dropout": 0.0, "warmup": 50}]
    assert [st.get("dropout") for st in stages] == [0.1, 0.0] and [st.get("warmup") for st in stages] == [100, 50]
    assert per_stage({"dropout": 0.0, "stages": stages}, "dropout") == "0.1 (stage 1), 0.0 (stage 2)"
    assert per_stage({"warmup": 50, "stages": stages}, "warmup", " steps") == "100 steps (stage 1), 50 (stage 2)"
    # Runs of one value are named by their first and last stage; a stage that did not record it takes the card's.
    four = {"lr": 2e-4, "stages": [{"lr": 6e-4}, {"lr": 6e-4}, {"lr": 3e-4}, {}]}
    assert per_stage(four, "lr") == "0.0006 (stages 1–2), 0.0003 (stage 3), 0.0002 (stage 4)"
    assert earlier_stages({"dropout": 0.0, "stages": stages, "steps": 11962, "lr": 0.003}) == stages  # kept as written
    assert per_stage({"dropout": 0.1, "steps": 900, "lr": 6e-4}, "dropout") == "0.1" and earlier_stages({}) == []


def test_the_standard_error_of_a_ratio_over_windows():
    # Windows of one token each: the plain standard error of the mean, std (ddof 1) / sqrt(n).
    assert recipes.ratio_standard_error([(1.0, 1), (3.0, 1)]) == pytest.approx(1.0)
    # Every window at the same rate per token, whatever its length: no spread, whatever the counts.
    assert recipes.ratio_standard_error([(2.0, 1), (6.0, 3), (10.0, 5)]) == pytest.approx(0.0)
    # Longer windows weigh more: (0 + 8) / (1 + 3) = 2; residuals -2 and 2; sqrt(2 * 8) / 4 = 1.
    assert recipes.ratio_standard_error([(0.0, 1), (8.0, 3)]) == pytest.approx(1.0)
    assert math.isnan(recipes.ratio_standard_error([(1.0, 1)]))  # one window: no spread to measure


def test_span_corruption_takes_spans_out_and_writes_them_after_their_sentinels():
    ids = np.arange(100, 140)  # 40 distinct ids: what is taken out can be found again
    sentinels = list(range(1000, 1100))
    inputs, targets = objectives.span_corrupt(ids, sentinels, np.random.default_rng(0))
    n_spans = sum(i in sentinels for i in inputs)
    assert n_spans == 2  # 15% of 40 tokens is 6, in spans of 3 on average
    assert targets[0] == sentinels[0] and targets[-1] == sentinels[n_spans]
    # Each sentinel of the input stands where the target's span after the same sentinel was.
    rebuilt, spans = [], {}
    for tok in targets:
        if tok in sentinels:
            current = spans.setdefault(tok, [])
        else:
            current.append(tok)
    for tok in inputs:
        rebuilt.extend(spans[tok] if tok in sentinels else [tok])
    assert rebuilt == list(ids)


def test_a_share_of_short_windows_gives_sentence_long_inputs_with_one_or_two_spans():
    tok = tokenizer_training.train_unigram([TEXT], 300)
    stream = objectives.token_stream(tok, [TEXT] * 4, tok.eos_token_id)
    sentinels = set(tok.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)]))

    def spans_per_row(batch):
        return [sum(int(i) in sentinels for i in row) for row in batch["input_ids"]]

    plain = objectives.span_corruption_batch(stream, 8, 64, np.random.default_rng(3), tok)
    assert min(spans_per_row(plain)) >= 3  # 63 tokens: about 9 noise tokens, 3 spans
    mixed = objectives.span_corruption_batch(stream, 8, 64, np.random.default_rng(3), tok, short_share=0.5)
    lengths = mixed["attention_mask"].sum(dim=1).tolist()
    short = [n for n, length in zip(spans_per_row(mixed), lengths, strict=True) if length < 40]
    assert len(short) == 4 and all(1 <= n <= 2 for n in short)
    # No short windows asked for: the very batches of every earlier run.
    again = objectives.span_corruption_batch(stream, 8, 64, np.random.default_rng(3), tok, short_share=0.0)
    assert torch.equal(again["input_ids"], plain["input_ids"]) and torch.equal(again["labels"], plain["labels"])


def test_the_infill_gap_is_the_sum_of_its_parts():
    from tests.tiny_models import build

    model, tok = build("t5")
    model.eval()
    x0, x1, x2 = tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>", "<extra_id_2>"])
    marks = {x0, x1, x2, tok.eos_token_id}
    assert recipes.target_parts([x0, 7, 8, x1, 9, x2, tok.eos_token_id], marks) == [
        "sentinels", "first tokens", "later tokens", "sentinels", "first tokens", "sentinels", "sentinels",
    ]  # fmt: skip
    stream = objectives.token_stream(tok, [TEXT] * 2, tok.eos_token_id)
    unigram = np.log(np.full(len(tok), 1 / len(tok)))
    result = recipes.span_infill_loss(model, tok, stream, [TEXT], seq_len=32, passes=2, unigram_logp=unigram)
    parts = result["gap_parts"]
    assert sum(p["tokens"] for p in parts.values()) == result["target_tokens"]
    gap = result["unigram_baseline_loss"] - result["held_out_loss"]
    assert sum(p["under_unigram"] for p in parts.values()) == pytest.approx(gap, abs=1e-4)
    blanked = result["input_blanked_loss"] - result["held_out_loss"]
    assert sum(p["under_blanked"] for p in parts.values()) == pytest.approx(blanked, abs=1e-4)
    assert parts["first tokens"]["tokens"] > 0 and parts["later tokens"]["tokens"] > 0


def test_t5_attention_starts_local_in_the_encoder_and_matching_in_the_cross_attention():
    """``--local-bias`` / ``--match-prior``: a fresh T5's encoder bias falls with distance per head, and the prior
    head looks at the input's copy of the decoder's token (a sentinel at its own sentinel); T5's own start does not."""
    from tests.tiny_models import build

    model, tok = build("t5")
    recipes.start_t5_attention(model, local_bias=(1.0, 0.0), match_prior=8.0)
    bias = model.encoder.block[0].layer[0].SelfAttention.compute_bias(6, 6)[0]  # (heads, query, key)
    distance = (torch.arange(6)[:, None] - torch.arange(6)[None]).abs().float()
    assert torch.allclose(bias[0], -distance) and torch.equal(bias[1], torch.zeros(6, 6))

    words = tok("she opened the door and walked into the room", add_special_tokens=False)["input_ids"]
    x0 = tok.convert_tokens_to_ids("<extra_id_0>")
    ids = torch.tensor([words[:3] + [x0] + words[3:] + [tok.eos_token_id]])

    def on_sentinel(m) -> float:
        m.set_attn_implementation("eager")
        m.eval()
        with torch.no_grad():
            out = m(input_ids=ids, decoder_input_ids=torch.tensor([[tok.pad_token_id, x0]]), output_attentions=True)
        return float(out.cross_attentions[0][0, 0, 1, len(words[:3])])  # head 0, the sentinel's place

    fresh, _ = build("t5")
    assert on_sentinel(model) > 1 / 3 and on_sentinel(fresh) < 1 / 10  # of 35 input tokens


def test_a_share_of_decoder_windows_ends_by_repeating_a_stretch_of_itself():
    stream = np.arange(5000)  # every id once: a repeat can only come from the window itself
    plain = objectives.causal_lm_batch(stream, 8, 128, np.random.default_rng(4))
    mixed = objectives.causal_lm_batch(stream, 8, 128, np.random.default_rng(4), repeat_share=0.25)
    assert mixed["input_ids"].shape == (8, 128) and torch.equal(mixed["labels"], mixed["input_ids"])
    repeats = 0
    for row in mixed["input_ids"].tolist():
        seen, tail = {}, 0
        for i, token in enumerate(row):
            tail = tail + 1 if token in seen else 0
            seen.setdefault(token, i)
        if tail:  # the window's last `tail` tokens are a stretch of its start, in order
            lo, hi = objectives.REPEAT_SPAN
            first = seen[row[-tail]]
            assert lo <= tail <= hi and row[-tail:] == row[first : first + tail] and len(set(row[:-tail])) == 128 - tail
            repeats += 1
    assert repeats == 2
    # No repeats asked for: the very batches of every earlier run.
    again = objectives.causal_lm_batch(stream, 8, 128, np.random.default_rng(4), repeat_share=0.0)
    assert torch.equal(again["input_ids"], plain["input_ids"])


def test_the_card_names_the_t5_starts_of_the_first_stage_and_its_command_repeats_them():
    from explorer.training.card import attention_start

    stages = [{"steps": 7123, "lr": 0.01, "local_bias": [1.0, 0.5, 0.25, 0.0], "match_prior": 8.0}, {"steps": 10}]
    clause = attention_start(stages)
    assert "slopes 1, 0.5, 0.25, 0 by head" in clause and "logit +8" in clause
    assert attention_start([{"steps": 10}]) == "" and attention_start([]) == ""


def decoder_card_commands(folder, stages: list[dict]) -> list[str]:
    """The command lines of tiny-gpt2's card written again into ``folder`` with these stages."""
    from explorer.training.card import write_card

    tokenizer, model = recipes.load_trained("decoder", BUNDLED_MODELS / "tiny-gpt2")
    shipped = json.loads((BUNDLED_MODELS / "tiny-gpt2" / "card.json").read_text())
    metrics = {**{k: v for k, v in shipped.items() if k != "samples"}, "stages": stages}
    write_card(folder, "decoder", metrics, model, tokenizer, "a corpus", [])
    return [line for line in (folder / "README.md").read_text().splitlines() if "python -m explorer" in line]


def test_the_card_names_the_decoders_copy_start_and_its_command_repeats_it(tmp_path):
    from explorer.training.card import attention_start

    stages = [{"steps": 900, "lr": 6e-4}, {"steps": 2400, "lr": 3e-4, "copy_share": 0.375,
              "copy_start": {"previous_token": 0.97, "induction": 0.38, "previous_token_head": [0, 0],
                                            "induction_head": [1, 2]}}]  # fmt: skip
    clause = attention_start(stages)
    assert "stage 2 began by fitting a previous-token head (layer 0 head 0: 0.97" in clause
    assert "induction head (layer 1 head 2: 0.38" in clause
    assert "38% of stage 2's windows" in clause
    commands = decoder_card_commands(tmp_path, stages)
    assert "--copy" not in commands[0] and "--copy-share 0.375 --copy-start" in commands[1]


def test_the_card_names_a_stages_loop_penalty_and_its_command_repeats_it(tmp_path):
    from explorer.training.card import attention_start

    stages = [{"steps": 900, "lr": 6e-4}, {"steps": 1632, "lr": 2e-4, "copy_share": 0.1, "unlikelihood": 1.0,
              "loop_opening": [32, 32]}, {"steps": 800, "lr": 1e-4, "unlikelihood": 1.0, "loop_opening": [4, 32]},
              {"steps": 900, "lr": 1e-4, "unlikelihood": 2.0, "loop_opening": [32, 32], "loop_starts": 0.5,
               "loop_document_start": [4, 12], "loop_anchor": 1.0}]  # fmt: skip
    clause = attention_start(stages)
    assert "every second step of stage 2 the model continued 32-token openings greedily" in clause
    assert "stage 3 the model continued openings of 4 to 32 tokens" in clause and "weight 1" in clause
    assert "stage 4 the model continued 32-token openings or (half the time) a document's first 4 to 12" in clause
    commands = decoder_card_commands(tmp_path, stages)
    assert "--unlikelihood" not in commands[0] and "--copy-share 0.1 --unlikelihood 1.0" in commands[1]
    assert "--unlikelihood 1.0" in commands[2] and "--loop-starts" not in commands[2]
    assert (
        "pulled towards the model the stage began from, its looped tokens taken out (KL, weight 1)" in clause
        and clause.count("KL") == 1
    )
    assert "--unlikelihood 2.0 --loop-starts 0.5 --loop-anchor 1.0" in commands[3]


def test_document_openings_are_the_first_tokens_of_documents():
    separator = 0
    stream = np.array([5, 6, 7, 0, 8, 9, 0, 10, 11, 12, 13, 0, 14])  # the last document is too short for 2 tokens
    rows = objectives.document_openings(stream, separator, 200, 2, np.random.default_rng(0))
    assert {tuple(r) for r in rows.tolist()} == {(5, 6), (8, 9), (10, 11)}


def test_copy_windows_say_a_stretch_again_and_again_and_label_only_what_can_be_read_back():
    stream = np.arange(5000)  # every id once: a repeat can only come from the window itself
    batch = objectives.causal_lm_batch(stream, 8, 128, np.random.default_rng(4), repeat_share=0.25, copy_share=0.5)
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    assert (labels[:2] == ids[:2]).all() and (labels[6:] == ids[6:]).all()  # repeats and plain windows
    for i, (row, lab) in enumerate(zip(ids[2:6], labels[2:6])):
        span = int((lab == -100).sum())
        lo, hi = objectives.COPY_SPAN
        assert lo <= span <= hi and (lab[:span] == -100).all() and (lab[span:] == row[span:]).all()
        assert (row[span:] == row[:-span]).all()  # every labelled token is the one `span` before it
        stretch = row[:span]
        contiguous = (np.diff(stretch) == 1).all()
        assert contiguous == (i % 2 == 0)  # even rows a stretch of text, odd rows ids drawn at random
    # No copies asked for: the very batches of every earlier run.
    plain = objectives.causal_lm_batch(stream, 8, 128, np.random.default_rng(4), repeat_share=0.25)
    assert torch.equal(plain["input_ids"][:2], batch["input_ids"][:2])


def test_the_copy_start_fits_a_previous_token_head_and_an_induction_head_and_nothing_else():
    tokenizer, model = recipes.load_trained("decoder", BUNDLED_MODELS / "tiny-gpt2")
    model.train()
    stream = objectives.token_stream(tokenizer, [MODERN_SAMPLE.read_text(encoding="utf-8")], tokenizer.eos_token_id)
    (pl, ph), (il, ih) = recipes.PREVIOUS_TOKEN_HEAD, recipes.INDUCTION_HEAD
    d = model.config.n_embd
    width = d // model.config.n_head
    torch.manual_seed(0)
    with torch.no_grad():  # the bundled model was trained from this start: make the two heads plain again
        for layer, head in ((pl, ph), (il, ih)):
            for part in (0, 1, 2):
                cols = slice(part * d + head * width, part * d + (head + 1) * width)
                model.transformer.h[layer].attn.c_attn.weight[:, cols].normal_(0, 0.02)
                model.transformer.h[layer].attn.c_attn.bias[cols] = 0
    untouched = recipes.start_copy_heads(model, stream, steps=(0, 0), log=lambda msg: None)  # scores as it is
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fitted = recipes.start_copy_heads(model, stream, steps=(60, 60), log=lambda msg: None)
    assert untouched["previous_token"] < 0.5 < 0.8 < fitted["previous_token"]
    assert untouched["induction"] < 0.02 and fitted["induction"] > 0.1
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"transformer.h.{pl}.attn.c_attn.weight", f"transformer.h.{pl}.attn.c_attn.bias",
                       f"transformer.h.{pl}.attn.c_proj.weight", f"transformer.h.{il}.attn.c_attn.weight",
                       f"transformer.h.{il}.attn.c_attn.bias"}  # fmt: skip
    # Within them, only the fitted heads' columns (query, key, value) and output rows moved.
    w = dict(model.named_parameters())
    prev_cols = [c for part in (0, 1, 2) for c in range(part * d + ph * width, part * d + (ph + 1) * width)]
    ind_cols = [c for part in (0, 1) for c in range(part * d + ih * width, part * d + (ih + 1) * width)]
    for layer, cols in ((pl, prev_cols), (il, ind_cols)):
        name = f"transformer.h.{layer}.attn.c_attn.weight"
        others = [c for c in range(3 * d) if c not in cols]
        assert torch.equal(w[name][:, others], before[name][:, others])
    proj = f"transformer.h.{pl}.attn.c_proj.weight"
    others = [r for r in range(d) if not ph * width <= r < (ph + 1) * width]
    assert torch.equal(w[proj][others], before[proj][others])
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_a_loop_is_every_token_of_a_4_gram_said_before_in_its_row():
    rows = torch.tensor([[1, 2, 3, 4, 1, 2, 3, 4, 5, 6], [7, 7, 7, 7, 7, 8, 9, 1, 2, 3]])
    looped = objectives.repeated_ngrams(rows, 4).int().tolist()
    # Row 0: "1 2 3 4" said again at 4..7. Row 1: "7 7 7 7" again at 1..4 (an overlapping repeat).
    assert looped == [[0, 0, 0, 0, 1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]]


def test_the_loop_penalty_makes_a_models_own_loops_unlikely():
    tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    model = tiny_gpt2(tok)
    prefixes = torch.tensor([ids[:12] for ids in tok([TEXT[:60], TEXT[100:160]])["input_ids"]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    shares = []
    for _ in range(40):
        penalty, anchor, share = objectives.loop_unlikelihood(model, prefixes, new_tokens=32)
        assert penalty.item() >= 0 and anchor.item() == 0 and model.training  # greedy text in eval mode, back after
        shares.append(share)
        opt.zero_grad()
        penalty.backward()
        opt.step()
    assert shares[0] > 0.5 and min(shares[-5:]) < shares[0] / 2, shares  # a random model loops; taught, it stops


def test_the_loop_anchor_is_the_penalty_routed_to_the_references_own_choices():
    """Against the model itself, the KL to its distribution without the looped token is -log(1 - p): the
    unlikelihood term. Minimised alone, it teaches the model out of its loops as the penalty does."""
    import copy

    tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    model = tiny_gpt2(tok)
    model.eval()  # no dropout, so the model and its copy are one function
    reference = copy.deepcopy(model)
    prefixes = torch.tensor([ids[:12] for ids in tok([TEXT[:60], TEXT[100:160]])["input_ids"]])
    first = objectives.loop_unlikelihood(model, prefixes, 32, reference=reference)
    assert first.looped > 0.5 and first.anchor.item() == pytest.approx(first.unlikelihood.item(), rel=1e-3)
    assert objectives.loop_unlikelihood(model, prefixes, 32).anchor.item() == 0  # no reference, no anchor
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    shares = []
    for _ in range(40):
        penalty = objectives.loop_unlikelihood(model, prefixes, 32, reference=reference)
        shares.append(penalty.looped)
        opt.zero_grad()
        penalty.anchor.backward()
        opt.step()
    assert min(shares[-5:]) < shares[0] / 2, shares


@torch.no_grad()
def test_greedy_loops_scores_the_models_continuations_and_text_itself():
    tok = tokenizer_training.train_byte_level_bpe([TEXT], 300)
    model = tiny_gpt2(tok, positions=128)  # a 32-token opening and 64 more
    looping = recipes.greedy_loops(model, tok, [TEXT * 3], prefixes=4)
    assert looping["looped"] > 0.5 and looping["prefixes"] == 4 and looping["text"] < looping["looped"]


def test_a_time_budget_without_steps_runs_until_the_time_is_spent():
    """--minutes 75 alone once stopped at the default 2,000 steps, its learning rate decayed over those."""
    from explorer.training.__main__ import DEFAULT_STEPS, stage_steps

    assert stage_steps(None, None) == DEFAULT_STEPS and stage_steps(0, None) == 0 and stage_steps(500, 75) == 500
    assert stage_steps(None, 75) == sys.maxsize
    steps, recipe = stage_steps(None, 75), recipes.recipe_for("encoder_decoder")
    assert recipes.lr_at(5000, steps, recipe, time_progress=0.0) == pytest.approx(recipe.lr)  # time governs, not steps
    assert recipes.lr_at(5000, steps, recipe, time_progress=0.5) == pytest.approx(recipe.lr * 0.55)  # half-way down


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--family", "encoder_decoder", "--resume", "--local-bias", "1,0.5"], "without --resume"),
        (["--family", "encoder_decoder", "--resume", "--match-prior", "8"], "without --resume"),
        (["--family", "encoder", "--copy-start"], "--family decoder"),
        (["--family", "decoder", "--resume", "--copy-start"], "give it --steps"),
        (["--family", "encoder", "--unlikelihood", "1"], "--family decoder"),
        (["--family", "decoder", "--end-weight", "1"], "--family encoder_decoder"),
        (["--family", "decoder", "--loop-starts", "0.5"], "with --unlikelihood"),
        (["--family", "decoder", "--unlikelihood", "1", "--loop-starts", "2"], "from 0 to 1"),
        (["--family", "decoder", "--minutes", "-5"], "over 0"),
        (["--family", "decoder", "--minutes", "nan"], "over 0"),
    ],
)
def test_a_start_the_run_cannot_use_is_refused_before_any_work(tmp_path, capsys, argv, message):
    """--local-bias on a resumed run was ignored without a word."""
    from explorer.training.__main__ import main

    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "model"), "--steps", "0"])
    assert message in capsys.readouterr().err and not (tmp_path / "model").exists()

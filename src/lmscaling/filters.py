"""Document cleaning and the published quality heuristics of Gopher and C4.

Cleaning (:class:`CleanOptions`, :func:`clean_text`) changes a document's text; each step is
switchable. Quality filters decide whether a document is kept and say why not:

- :class:`GopherQuality`: the quality filter of Rae et al. 2021 ("Scaling Language Models:
  Methods, Analysis & Insights from Training Gopher"), Appendix A.1.1;
- :class:`GopherRepetition`: the repetition filter of the same appendix, thresholds of its
  Table A1;
- :class:`C4Filter`: the C4 rules of Raffel et al. 2020 ("Exploring the Limits of Transfer
  Learning with a Unified Text-to-Text Transformer"), Section 2.2, with the constants of the
  paper's reference implementation (TensorFlow Datasets ``c4_utils``); it also removes lines;
- :class:`LanguageFilter`: language identification with py3langid (Lui and Baldwin 2012), whose
  model ships inside the package (nothing is downloaded at run time).

Every Gopher and C4 threshold defaults to the paper's value. Words are whitespace-separated
tokens (as in Dolma's Gopher tagger); lines are split on ``\\n`` only; paragraphs on two or more
newlines.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass, fields
from itertools import accumulate

import ftfy

_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # category Cc except \t and \n
_ASCII_CONTROLS = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])
_HSPACE_RUN_RE = re.compile(r"[^\S\n]+")
_TRAILING_SPACE_RE = re.compile(r" +\n")
_BLANK_LINES_RE = re.compile(r"\n{3,}")
_PARAGRAPH_RE = re.compile(r"\n{2,}")
_LINE_RUN_RE = re.compile(r"\n+")

_SENTENCE_END_RE = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")
_CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_PUNCTUATION = string.punctuation + "“”‘’«»–—…•·"
# Whole whitespace-separated words: of punctuation only; without an alphabetic character.
_SYMBOL_WORD_RE = re.compile("(?<!\\S)[" + re.escape(_PUNCTUATION) + "]+(?!\\S)")
_NON_ALPHA_WORD_RE = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")
_MOJIBAKE_ONLY = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=False,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=False,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)


@dataclass(frozen=True)
class CleanOptions:
    """Which cleaning steps run, in this order (keys of ``corpora.<name>.clean``).

    Attributes:
        strip_bom: remove leading U+FEFF byte-order marks.
        fix_mojibake: repair mojibake (UTF-8 decoded as Latin-1/Windows-1252 and similar) with
            ftfy's encoding fixes only: no quote uncurling, no width or ligature changes.
            Pure-ASCII documents are skipped (they cannot hold mojibake).
        unify_line_endings: ``\\r\\n`` and lone ``\\r`` become ``\\n``.
        remove_control_chars: remove Unicode category Cc except ``\\n`` and ``\\t``.
        nfc: Unicode normalization form C.
        collapse_whitespace: runs of horizontal whitespace become one space, spaces before a
            newline are removed, three or more newlines become two. Off by default: it breaks
            the indentation of code and verse.
    """

    strip_bom: bool = True
    fix_mojibake: bool = True
    unify_line_endings: bool = True
    remove_control_chars: bool = True
    nfc: bool = True
    collapse_whitespace: bool = False


def clean_text(text: str, opts: CleanOptions = CleanOptions()) -> tuple[str, bool]:
    """Apply the enabled cleaning steps; returns ``(text, mojibake_fixed)``.

    Idempotent without mojibake repair. With it, a second pass can still change a text whose
    control characters, once removed, bring two halves of a mojibake sequence together.
    """
    if opts.strip_bom:
        text = text.lstrip("\ufeff")
    fixed = False
    if opts.fix_mojibake and not text.isascii():
        repaired = ftfy.fix_text(text, _MOJIBAKE_ONLY)
        fixed = repaired != text
        text = repaired
    if opts.unify_line_endings and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if opts.remove_control_chars:
        if text.isascii():  # bytes.translate deletes at memory speed
            data = text.encode("ascii")
            kept = data.translate(None, _ASCII_CONTROLS)
            if len(kept) != len(data):
                text = kept.decode("ascii")
        else:
            text = _CONTROL_RE.sub("", text)
    if opts.nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if opts.collapse_whitespace:
        text = _HSPACE_RUN_RE.sub(" ", text)
        text = _TRAILING_SPACE_RE.sub("\n", text)
        text = _BLANK_LINES_RE.sub("\n\n", text)
    return text, fixed


@dataclass(frozen=True)
class GopherQuality:
    """Gopher quality filter (Rae et al. 2021, Appendix A.1.1); defaults are the paper's.

    A document is removed when its count of non-symbol words (words with a character that is
    not punctuation) is outside [min_words, max_words]; their mean length is outside
    [min_mean_word_length, max_mean_word_length] characters; the ``#`` count or the ellipsis
    count (``...`` and ``…``) per word exceeds max_symbol_word_ratio; more than
    max_bullet_lines_ratio of lines start with a bullet (``•`` or ``-``); more than
    max_ellipsis_lines_ratio of lines end with an ellipsis; fewer than min_alpha_words_ratio of
    words hold an alphabetic character; or fewer than min_stop_words of ``stop_words`` occur.
    """

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")

    REASONS = (
        "gopher_word_count",
        "gopher_mean_word_length",
        "gopher_symbol_ratio",
        "gopher_bullet_lines",
        "gopher_ellipsis_lines",
        "gopher_alpha_words",
        "gopher_stop_words",
    )

    def __call__(self, text: str) -> str | None:
        """The reason ``text`` fails (one of :attr:`REASONS`), or None when it passes."""
        words = text.split()
        if not words:
            return "gopher_word_count"
        symbols = _SYMBOL_WORD_RE.findall(text)  # words made of punctuation only
        n = len(words) - len(symbols)
        if not self.min_words <= n <= self.max_words:
            return "gopher_word_count"
        mean = (sum(map(len, words)) - sum(map(len, symbols))) / n
        if not self.min_mean_word_length <= mean <= self.max_mean_word_length:
            return "gopher_mean_word_length"
        hashes, ellipses = text.count("#"), text.count("...") + text.count("…")
        if max(hashes, ellipses) / len(words) > self.max_symbol_word_ratio:
            return "gopher_symbol_ratio"
        lines = text.split("\n")
        bullets = sum(1 for s in lines if s.lstrip().startswith(("•", "-")))
        if bullets / len(lines) > self.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
        trailing = sum(1 for s in lines if s.rstrip().endswith(("...", "…")))
        if trailing / len(lines) > self.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
        alpha = len(words) - len(_NON_ALPHA_WORD_RE.findall(text))
        if alpha / len(words) < self.min_alpha_words_ratio:
            return "gopher_alpha_words"
        if len(set(self.stop_words).intersection(words)) < self.min_stop_words:
            return "gopher_stop_words"
        return None


@dataclass(frozen=True)
class GopherRepetition:
    """Gopher repetition filter (Rae et al. 2021, Appendix A.1.1, Table A1 thresholds).

    Removes a document when the fraction of duplicate lines (or paragraphs) exceeds
    dup_line_frac (dup_para_frac); the characters in duplicate lines (paragraphs) exceed
    dup_line_char_frac (dup_para_char_frac) of the text; the most frequent n-gram, n in
    ``top_ngrams``, covers more than its fraction of the characters (count × length); or the
    characters of duplicated n-grams, n in ``dup_ngrams``, exceed their fraction (overlapping
    duplicates counted once: after a duplicate the scan skips n words). Character counts of
    n-grams are summed word lengths, as in the paper's description.
    """

    dup_line_frac: float = 0.30
    dup_para_frac: float = 0.30
    dup_line_char_frac: float = 0.20
    dup_para_char_frac: float = 0.20
    top_ngrams: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    dup_ngrams: tuple[tuple[int, float], ...] = (
        (5, 0.15),
        (6, 0.14),
        (7, 0.13),
        (8, 0.12),
        (9, 0.11),
        (10, 0.10),
    )

    REASONS = (
        "gopher_dup_para_frac",
        "gopher_dup_para_chars",
        "gopher_dup_line_frac",
        "gopher_dup_line_chars",
        "gopher_top_ngram",
        "gopher_dup_ngram",
    )

    def __call__(self, text: str) -> str | None:
        """The reason ``text`` fails (one of :attr:`REASONS`), or None when it passes."""
        if not text:
            return "gopher_dup_line_frac"
        total = len(text)
        paragraphs = _PARAGRAPH_RE.split(text.strip())
        dups, chars = _duplicates(paragraphs)
        if dups / len(paragraphs) > self.dup_para_frac:
            return "gopher_dup_para_frac"
        if chars / total > self.dup_para_char_frac:
            return "gopher_dup_para_chars"
        lines = _LINE_RUN_RE.split(text)
        dups, chars = _duplicates(lines)
        if dups / len(lines) > self.dup_line_frac:
            return "gopher_dup_line_frac"
        if chars / total > self.dup_line_char_frac:
            return "gopher_dup_line_chars"
        words = text.split()
        lengths = [len(w) for w in words]
        for n, frac in self.top_ngrams:
            if len(words) < n:
                continue
            gram, count = Counter(_ngrams(words, n)).most_common(1)[0]
            if (len(" ".join(gram)) * count) / total > frac:
                return "gopher_top_ngram"
        cum = list(accumulate(lengths, initial=0))
        for n, frac in sorted(self.dup_ngrams):
            grams = list(_ngrams(words, n))
            if len(set(grams)) == len(grams):
                break  # no repeated n-gram, so no repeated longer one either
            if _duplicate_ngram_chars(grams, cum, n, frac * total) > frac * total:
                return "gopher_dup_ngram"
        return None


def _ngrams(words: list[str], n: int):
    """Word n-grams as tuples (consecutive windows; none when fewer than n words)."""
    return zip(*(words[i:] for i in range(n)), strict=False)


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, their characters), first occurrences not counted."""
    seen: set[str] = set()
    dups = chars = 0
    for item in items:
        if item in seen:
            dups += 1
            chars += len(item)
        else:
            seen.add(item)
    return dups, chars


def _duplicate_ngram_chars(grams: list[tuple], cum: list[int], n: int, limit: float) -> int:
    """Characters of word n-grams seen before (a duplicate's words are not counted again),
    counted until they exceed ``limit``."""
    seen: set[tuple[str, ...]] = set()
    chars = idx = 0
    end = len(grams)
    while idx < end:
        gram = grams[idx]
        if gram in seen:
            chars += cum[idx + n] - cum[idx]
            if chars > limit:
                break
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return chars


@dataclass(frozen=True)
class C4Filter:
    """C4 rules (Raffel et al. 2020, Section 2.2; constants of TFDS ``c4_utils``).

    Line by line: lines holding a word longer than max_word_length characters are removed;
    citation markers (``[1]``, ``[edit]``, ``[citation needed]``) are deleted; lines that do not
    end in one of ``end_marks`` (or end in ``...``) are removed; lines with fewer than
    min_words_per_line words are removed; a ``lorem ipsum`` line removes the document; lines
    mentioning ``javascript`` are removed; a ``{`` removes the document; lines with a cookie or
    terms-of-use phrase are removed. The kept lines, stripped and joined with ``\\n``, must hold
    at least min_sentences sentences (a sentence ends with ``.``, ``!`` or ``?`` before
    whitespace; each kept line counts at least one).
    """

    min_words_per_line: int = 5
    min_sentences: int = 3
    max_word_length: int = 1000
    end_marks: tuple[str, ...] = (".", "?", "!", '"')
    remove_citations: bool = True
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True

    POLICY = (
        "terms of use",
        "privacy policy",
        "cookie policy",
        "uses cookies",
        "use of cookies",
        "use cookies",
    )
    REASONS = ("c4_lorem_ipsum", "c4_curly_bracket", "c4_too_few_sentences")

    def __call__(self, text: str) -> tuple[str, str | None, int]:
        """``(kept_text, reason or None, lines_removed)`` for ``text``."""
        kept: list[str] = []
        sentences = removed = 0
        for line in text.split("\n"):
            line = line.strip()
            words = line.split()
            if len(line) > self.max_word_length and max(map(len, words)) > self.max_word_length:
                removed += 1
                continue
            if self.remove_citations:
                line = _CITATION_RE.sub("", line)
            if not line.endswith(self.end_marks) or line.endswith("..."):
                removed += bool(line)
                continue
            if len(words) < self.min_words_per_line:
                removed += 1
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return text, "c4_lorem_ipsum", removed
            if self.filter_javascript and "javascript" in lower:
                removed += 1
                continue
            if self.filter_curly_bracket and "{" in line:
                return text, "c4_curly_bracket", removed
            if self.filter_policy and any(p in lower for p in self.POLICY):
                removed += 1
                continue
            sentences += max(1, len(_SENTENCE_END_RE.findall(line)))
            kept.append(line)
        if sentences < self.min_sentences:
            return text, "c4_too_few_sentences", removed
        return "\n".join(kept), None, removed


@dataclass(frozen=True)
class QualityOptions:
    """The quality filters of one corpus (``corpora.<name>.quality``); None = off.

    Applied in this order: Gopher repetition, Gopher quality, C4 (which also removes lines).
    """

    gopher_repetition: GopherRepetition | None = None
    gopher_quality: GopherQuality | None = None
    c4: C4Filter | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        """Removal reasons the enabled filters can give."""
        out: tuple[str, ...] = ()
        for f in (self.gopher_repetition, self.gopher_quality, self.c4):
            if f is not None:
                out += f.REASONS
        return out

    def __call__(self, text: str) -> tuple[str, str | None, int]:
        """``(text, reason or None, c4_lines_removed)`` after every enabled filter."""
        for f in (self.gopher_repetition, self.gopher_quality):
            if f is not None and (reason := f(text)) is not None:
                return text, reason, 0
        if self.c4 is not None:
            return self.c4(text)
        return text, None, 0


_LANGUAGE_CODE_RE = re.compile("[a-z]{2,3}")


@functools.cache
def _language_identifier():
    """py3langid's model with normalized probabilities and its language codes (loaded once)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return identifier, frozenset(identifier.nb_classes)


@dataclass(frozen=True)
class LanguageFilter:
    """Keep documents in the languages of ``keep`` (``corpora.<name>.language``).

    The language is the most probable class of py3langid's naive Bayes model over byte n-grams
    (Lui and Baldwin 2012, "langid.py: An Off-the-shelf Language Identification Tool"; ISO 639-1
    codes such as ``en``, ``de``, ``zh``), with its probability normalized over all the model's
    languages. A document is kept when its language is in ``keep`` with probability at least
    ``min_probability``; otherwise it is removed with reason ``language``. Web pipelines filter
    the same way with other identifiers: C4 keeps English at probability >= 0.99 by
    langdetect (Raffel et al. 2020, Section 2.2), RefinedWeb at >= 0.65 by fastText (Penedo et
    al. 2023, Section 3.1); py3langid's probabilities are on their own scale, so the default
    0.5 is this package's choice, not a paper's.
    """

    keep: tuple[str, ...] = ("en",)
    min_probability: float = 0.5

    REASONS = ("language",)

    def __post_init__(self) -> None:
        if not self.keep or not all(
            isinstance(c, str) and _LANGUAGE_CODE_RE.fullmatch(c) for c in self.keep
        ):
            raise ValueError(
                f"language.keep: expected a list of ISO 639 codes like en, got {list(self.keep)}"
            )
        if not 0.0 <= self.min_probability <= 1.0:
            raise ValueError(
                f"language.min_probability: must be in [0, 1], got {self.min_probability}"
            )

    def identify(self, text: str) -> tuple[str, float]:
        """``(language code, probability)`` of ``text``.

        Raises:
            ValueError: naming ``language.keep`` when it holds a code the model does not know.
        """
        identifier, known = _language_identifier()
        unknown = sorted(set(self.keep) - known)
        if unknown:
            raise ValueError(
                f"language.keep: {unknown} not among py3langid's languages {sorted(known)}"
            )
        language, probability = identifier.classify(text)
        return language, probability

    def __call__(self, text: str) -> tuple[str, str | None]:
        """``(detected language, "language" when removed else None)``."""
        language, probability = self.identify(text)
        kept = language in self.keep and probability >= self.min_probability
        return language, None if kept else "language"


def filter_from_config(cls, value, key: str):
    """``cls()`` for ``True``, None for ``False``/None, ``cls(**value)`` for a mapping.

    Raises:
        ValueError: naming ``key`` for an unknown key or a bad value type.
    """
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    if not isinstance(value, dict):
        raise ValueError(f"{key}: expected true, false or a mapping of thresholds, got {value!r}")
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for k, v in value.items():
        if k not in known:
            raise ValueError(f"{key}.{k}: unknown key; allowed: {', '.join(known)}")
        default = getattr(cls, k)
        if isinstance(default, tuple):
            if not isinstance(v, list | tuple):
                raise ValueError(f"{key}.{k}: expected a list, got {v!r}")
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        elif isinstance(default, bool):
            if not isinstance(v, bool):
                raise ValueError(f"{key}.{k}: expected true or false, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{key}.{k}: expected a number, got {v!r}")
        kwargs[k] = v
    return cls(**kwargs)

"""Text that addresses the model rather than describing data: the common core of tool poisoning (in
definitions) and indirect prompt injection (in results). Patterns are about intent and structure
(imperatives aimed at the assistant, secrecy from the user, role markers, hidden characters), not about
particular attack strings."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from urllib.parse import unquote

from fmos_mcp.trust.detectors.findings import excerpt

# Invisible code points (Unicode's Default_Ignorable_Code_Point set, plus bidi controls): zero-width
# characters, bidi overrides, tag characters, variation selectors, Hangul fillers, soft hyphens... They render
# as nothing, so text built from them (or broken up by them) is text a person reviewing it does not see.
HIDDEN = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164"
    "\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
# Legitimate uses, which stay visible: a zero-width joiner or non-joiner inside an emoji sequence or between
# letters of scripts that need them (Persian, Indic...), one emoji or text presentation selector after a
# character, a stray soft hyphen (hyphenation hint) or two.
_PICTO = "\U0001F000-\U0001FAFF\u2600-\u27BF\u2300-\u23FF\u2B00-\u2BFF"
_JOINER_OK = re.compile(f"(?<=[{_PICTO}\ufe0f\U0001F3FB-\U0001F3FF\u0590-\u1fff\ua800-\uabff])[\u200c\u200d]"
                        f"(?=[{_PICTO}\u0590-\u1fff\ua800-\uabff])")
_PRESENTATION_OK = re.compile("(?<=[^\ufe00-\ufe0f\U000e0100-\U000e01ef\\s])[\ufe0e\ufe0f](?![\ufe00-\ufe0f])")
_SOFT_HYPHEN_RUN = 3  # from this many soft hyphens on, they are breaking words up rather than hyphenating

_I = re.IGNORECASE
DIRECTIVES: list[tuple[str, re.Pattern[str]]] = [
    ("override", re.compile(
        r"\b(?:ignore|disregard|forget|bypass|override|skip)\b[^.\n]{0,40}?\b(?:previous|prior|above|earlier|all|any|"
        r"other|system|safety|security|tool)\b[^.\n]{0,30}?\b(?:instructions?|descriptions?|rules?|prompts?|"
        r"guidelines?|restrictions?|safeguards?|checks?|policies|policy)\b"
        # someone else's instructions set aside: "disregard the operator's instructions", "forget what the user asked"
        r"|\b(?:ignore|disregard|forget)\s+(?:(?:the|your|my|their|his|her|all|these|those)\s+)?(?:\w+(?:'s|s')?\s+){0,2}"
        r"(?:instructions?|directions|orders|request|task|prompt)\b|\bforget\s+what\s+(?:the\s+)?(?:user|operator|you)\b", _I)),
    ("role-marker", re.compile(
        r"<\|?(?:im_start|im_end|system|assistant|user)\|?>|<\|(?:Assistant|User|System)\|>|^\s*(?:system|assistant)\s*:"
        r"|\[/?(?:INST|SYS)\]|<</?SYS>>", _I | re.M)),
    ("hidden-tag", re.compile(
        r"<\s*/?\s*(?:important|system|instructions?|secret|hidden|admin|sudo|critical|note_to_(?:ai|model|assistant))"
        r"\s*>", _I)),
    ("secrecy", re.compile(
        r"\b(?:do\s+not|don'?t|never|without)\s+(?:tell(?:ing)?|mention(?:ing)?|inform(?:ing)?|reveal(?:ing)?|show(?:ing)?|"
        r"notify(?:ing)?|alert(?:ing)?|let(?:ting)?)\b[^.\n]{0,20}\b(?:the\s+)?user\b"
        r"|\b(?:the\s+)?user\s+(?:must|should|will)\s+not\s+(?:know|see|be\s+told)\b"
        r"|\bwithout\s+(?:the\s+user'?s?\s+)?(?:knowledge|consent|noticing)\b", _I)),
    ("addressed-to-model", re.compile(
        r"\b(?:AI|assistant|model|LLM|agent|you)\b\s*(?:,|:)?\s*(?:must|should|have\s+to|need\s+to|are\s+required\s+to)\s+"
        r"(?:always\s+|first\s+|also\s+|now\s+|immediately\s+)?(?:call|use|invoke|run|execute|read|send|include|pass|"
        r"forward|upload|post|copy|ignore|add|append|email)\b", _I)),
    ("precondition", re.compile(
        r"\b(?:before|after|prior\s+to|when(?:ever)?)\s+(?:using|calling|invoking|running)\s+(?:this|any|the|every)\b"
        r"[^.\n]{0,60}\b(?:you\s+)?(?:must|should|need|first|always|read|call|send|include|pass)\b", _I)),
    ("new-instructions", re.compile(
        r"\b(?:new|updated|real|actual|your\s+(?:next|new|real))\s+(?:instructions?|task|orders|directive|system\s+prompt)\b"
        r"|\byou\s+are\s+now\b|\bfrom\s+now\s+on\b|\b(?:debug|developer|admin|god)\s+mode\b"
        r"|\b(?:reveal|print|show|repeat|output|leak|ignore|override|replace|new|updated)\s+(?:your\s+|the\s+)?system\s+prompt\b"
        r"|\b(?:restrictions?|safeguards?|safety\s+checks?)\s+(?:are|have\s+been)\s+(?:lifted|disabled|removed|suspended)\b"
        r"|\bemergency\s+override\b|\bauthori[sz](?:ing|ed)\s+you\s+to\b", _I)),
    ("sensitive-read", re.compile(
        r"\b(?:read|cat|open|load|include|send|upload|attach|copy)\b[^\n]{0,40}?(?:~/|\$HOME/|/home/\w+/|/root/)?"
        r"(?:\.ssh\b|id_rsa|id_ed25519|\.aws/credentials|\.env\b|/etc/(?:passwd|shadow)|\.netrc|\.git-credentials|"
        r"mcp\.json|claude_desktop_config|\.kube/config|cookies)", _I)),
    ("tool-steering", re.compile(
        r"\b(?:call|use|invoke|run|execute)\s+(?:the\s+)?[`'\"]?[A-Za-z][\w.-]*(?:_|__|-)[\w.-]+[`'\"]?\s+(?:tool|function)\b"
        r"[^.\n]{0,40}\b(?:now|immediately|first|instead|regardless|anyway|with|to\s+(?:send|get|retrieve|show))\b"
        r"|\b(?:execute|call)\s+(?:the\s+)?\w*(?:credential|password|secret|token|key)\w*\b", _I)),
]
EXFIL_URL = re.compile(r"\bhttps?://[^\s)\"'<>]+|\b[\w.+-]+@[\w-]+\.[\w.-]+\b|\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")
EXFIL_VERB = re.compile(
    r"\b(?:send|post|upload|forward|exfiltrat\w*|transmit|report|cc|bcc|beacon|leak|share|e-?mail|mirror|sync|"
    r"replicat|back\s*up|archiv|push|deliver|relay|stream|submit|copy|copies|log|store|save|dump|ship|export)\w*\b", _I)
_B64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"\b(?:[0-9a-fA-F]{2}){16,}\b")
# A payload cut into short pieces ("concatenate the parts"): runs of base64-alphabet chunks between spaces.
_B64_CHUNKS = re.compile(r"(?<![\w+/=-])(?:[A-Za-z0-9+/_-]{6,}={0,2}[ \t\r\n,;|.]{1,3}){3,}[A-Za-z0-9+/_-]{2,}={0,2}")


def hidden(text: str) -> Iterator[tuple[str, str]]:
    soft_hyphens = text.count("\u00ad")
    for match in HIDDEN.finditer(text):
        char, at = match.group(), match.start()
        if char in "\u200c\u200d" and _JOINER_OK.match(text, at):
            continue
        if char in "\ufe0e\ufe0f" and _PRESENTATION_OK.match(text, at):
            continue
        if char == "\u00ad" and soft_hyphens < _SOFT_HYPHEN_RUN:
            continue
        yield "hidden-unicode", excerpt(text, at, match.end())
        return


def has_hidden(text: str) -> bool:
    return next(hidden(text), None) is not None


def directives(text: str) -> Iterator[tuple[str, str]]:
    for kind, pattern in DIRECTIVES:
        match = pattern.search(text)
        if match:
            yield kind, excerpt(text, match.start(), match.end())


def encoded(text: str) -> Iterator[tuple[str, str]]:
    """Long base64 or hex runs that decode to readable text: a payload hidden from a human reviewer."""
    for decoded in decoded_payloads(text):
        yield "encoded-payload", excerpt(decoded, 0, 0)
        return


def decoded_payloads(text: str) -> Iterator[str]:
    """The readable texts that base64 (whole or cut into parts) and hex runs in the text decode to."""
    for match in _B64.finditer(text):
        decoded = _decode_b64(match.group())
        if decoded and _readable(decoded):
            yield decoded
    for match in _B64_CHUNKS.finditer(text):
        joined = re.sub(r"[ \t\r\n,;|.]+", "", match.group())
        if len(joined) >= 24 and re.search(r"[A-Z]", joined) and re.search(r"[a-z]", joined) and re.search(r"\d", joined):
            decoded = _decode_b64(joined)
            if decoded and _readable(decoded):
                yield decoded
    for match in _HEX.finditer(text):
        try:
            decoded = bytes.fromhex(match.group()).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _readable(decoded):
            yield decoded


_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2}[^%\s]{0,12}){3,}")


def percent_decoded(text: str) -> str | None:
    """The text with URL escapes (%20, %3A...) decoded, when it has runs of them: the same words, hidden from a
    reader and from patterns that look for them spelled out."""
    if "%" not in text or not _PERCENT.search(text):
        return None
    decoded = unquote(text)
    return decoded if decoded != text else None


_COMMON = frozenset({
    "the", "and", "to", "of", "a", "in", "is", "it", "you", "your", "this", "that", "with", "for", "on", "be",
    "as", "are", "or", "from", "by", "at", "file", "all", "before", "after", "then", "use", "call", "read",
    "send", "tool", "tools", "any", "every", "user", "data",
})
_ROT13 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                       "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm")


def rot13_decoded(text: str) -> str | None:
    """A passage that reads as English only in ROT13 (common words appear after rotation, not before): the
    rotated passage, else None."""
    for chunk in re.split(r"(?<=[.!?:;])\s+|\n+", text):
        words = re.findall(r"[A-Za-z]+", chunk)
        if len(words) < 5:
            continue
        plain = sum(w.lower() in _COMMON for w in words)
        rotated = chunk.translate(_ROT13)
        turned = sum(w.lower() in _COMMON for w in re.findall(r"[A-Za-z]+", rotated))
        if turned >= 3 and turned >= 2 * plain + 2:
            return rotated
    return None


def unquote_runs(text: str) -> str:
    """Only the parts of the text written in URL escapes, decoded."""
    return " ".join(unquote(m.group()) for m in _PERCENT.finditer(text))


def _decode_b64(token: str) -> str | None:
    token = token.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _readable(text: str) -> bool:
    """Decoded bytes that read as text: printable, mostly letters, several words (numbers, paths and
    punctuation may be part of it, binary noise may not)."""
    if len(text) < 16 or not all(c.isprintable() or c in "\n\r\t" for c in text):
        return False
    letters = sum(c.isalpha() or c == " " for c in text)
    words = re.findall(r"[A-Za-z]{2,}", text)
    return letters / len(text) > 0.6 and len(words) >= 3 and " " in text

"""Tool poisoning and shadowing: hidden instructions in a tool's definition, and tools that imitate or
redirect another server's tool. Findings carry weights; a tool whose weights reach the threshold is
quarantined until a person approves it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fmos_mcp.trust.detectors import instructions as ins
from fmos_mcp.trust.detectors.findings import Finding, excerpt

THRESHOLD = 3
MAX_TEXT = 32_768  # characters of one description or schema string
_WEIGHTS = {"addressed-to-model": 1, "precondition": 1, "tool-steering": 2}
_I, _M = re.IGNORECASE, re.MULTILINE
# Signals particular to tool definitions. A definition describes a tool to the model; text that instead
# tells the model to do something else, ties that to the tool's use, claims the tool breaks without it,
# hides it from the user, or points at data outside the tool's purpose is how poisoning reads whatever the
# wording. Each signal is weak on its own (benign descriptions use imperatives and name other tools); the
# weights add up across kinds, never within one kind, and a tool is quarantined at THRESHOLD.
DEFINITION_SIGNALS: list[tuple[str, int, re.Pattern[str]]] = [
    # who the text is for: the model, or a role line that puts words in someone's mouth
    ("audience", 2, re.compile(
        r"\b(?:note|message|instructions?|reminder|hint|memo|directive)\s+(?:for|to)\s+(?:the\s+|any\s+|all\s+)?"
        r"(?:assistant|ai|model|llm|agent|bot|copilot)s?\b"
        r"|(?:^|<!--|[\[({\n]|[.!?;]\s)\s*(?:assistant|ai\s+agent|agent|model|llm)\s*:\s*[A-Za-z]"
        r"|(?:^|[.!?]\s+|\n|<!--\s*)(?:user|human)\s*:\s+(?:I\b|please\b|(?:every|each|also|always|now)\b)"
        # what the model is expected to do, said about it: "it expects the agent to ...", "requires the AI to ..."
        r"|\b(?:expects?|requires?|needs?|wants?|asks?|instructs?|tells?|directs?)\s+(?:the\s+|an?\s+|any\s+|your\s+)?"
        r"(?:agent|assistant|model|ai|llm|bot)\s+to\b", _I | _M)),
    ("agent-subject", 1, re.compile(  # the reader named as the one acting: "agents get better results if they ..."
        r"\b(?:agents?|assistants?|(?:language\s+)?models?|LLMs?|AIs?|AI\s+systems?|bots?)\s+(?:should|must|shall|need\s+to|"
        r"have\s+to|get|will\s+get|are\s+(?:expected|required|asked)\s+to)\b|\bif\s+(?:the\s+)?(?:agents?|assistants?|models?)\s+"
        r"\w+", _I)),
    # a chat message written into a definition: {"role": "system", "content": ...}
    ("role-marker", 3, re.compile(r"[\"']role[\"']\s*:\s*[\"'](?:system|developer|assistant|user|tool)[\"']", _I)),
    # text pushed out of sight: long runs of blank space with more text after them
    ("padding", 2, re.compile(r"(?:[ \t\u00a0]{40,}|(?:[ \t]*\n){8,})[ \t\n]*\S")),
    # markdown that makes the client fetch a URL built from data: ![x](https://host/p.png?d=DATA)
    ("render-exfiltration", 3, re.compile(
        r"!?\[[^\]\n]{0,80}\]\(\s*https?://[^)\s]*[?&][\w.-]+=(?:[A-Z_]{3,}|\{[^}]*\}|<[^>]*>|\$\w+|%s)[^)]*\)"
        r"|\b(?:add|include|append|insert|embed|render|put)\b[^.\n]{0,40}\b(?:image|img|link|url|markdown|pixel)\b[^.\n]{0,80}"
        r"\bhttps?://", _I)),
    # when the side task runs: tied to using this (or any) tool, to an error, to answering
    ("usage-trigger", 1, re.compile(
        r"\b(?:every|each)\s+(?:time|invocation|call|use|request)\s+(?:you|of|this|the|it)\b"
        r"|\bwhenever\s+(?:you|this\s+tool|the\s+tool|it)\b"
        r"|\b(?:before|after|prior\s+to|when|while)\s+(?:using|calling|invoking|running|executing|filling|selecting|"
        r"answering|responding|replying|returning)\b"
        r"|\bwhen\s+(?:this|the)\s+tool\s+is\s+(?:selected|called|used|invoked|run)\b"
        r"|\bon\s+(?:its\s+)?(?:first|every)\s+(?:use|call|run)\b|\bwhen\s+that\s+happens\b"
        r"|\bif\s+(?:you\s+see|it\s+returns|the\s+call\s+fails)\b"
        r"|\b(?:after|when|once|upon)\s+(?:you\s+)?(?:receive|receiving|get|getting|see|seeing|read|reading)\s+(?:this|the)\s+"
        r"(?:value|result|output|response|field|data)\b|\bbeforehand\b"
        r"|\bbefore\s+(?:you\s+)?(?:continue|continuing|proceed|proceeding|answer|answering|respond|reply|do(?:ing)?\s+anything)\b"
        r"|\bfor\s+each\s+(?:tag|item|entry|value|element|result|call|request)\b", _I)),
    # keeping it from the user
    ("concealment", 3, re.compile(
        r"\b(?:do\s+not|don'?t|never|must\s+not|should\s+not|need\s+not|no\s+need\s+to)\s+(?:be\s+)?"
        r"(?:mention|reveal|disclose|report|show|display|tell|explain|acknowledge|surface|inform)(?:ed|ing|s)?\b"
        r"[^.\n]{0,40}?(?:\b(?:to\s+)?(?:the\s+)?(?:user|human|person|customer|operator|requester)s?\b|\bin\s+(?:the|your|any)\s+"
        r"(?:response|reply|answer|output|summary|message)\b|\b(?:this|these|that)\s+(?:step|instruction|note|"
        r"requirement|action)s?\b|\babout\s+(?:this|it)\b)"
        r"|\bkeep\s+(?:it|this|that|them)\s+(?:to\s+yourself|secret|hidden|confidential|between\s+us)\b"
        r"|\bwithout\s+(?:telling|informing|notifying|alerting)\s+(?:the\s+)?(?:user|anyone|them|the\s+person)\b"
        r"|\b(?:secretly|covertly|discreetly|surreptitiously|quietly)\b"
        r"|\b(?:summari[sz]e|report|mention|describe|show|tell|explain|relay)\s+only\b[^.\n]{0,50}?\b(?:to|for|with)\s+"
        r"(?:the\s+)?(?:user|human|person|customer|operator|requester)s?\b", _I)),
    # the tool supposedly needs the side task
    ("false-dependency", 1, re.compile(
        r"\botherwise\b[^.\n]{0,40}\b(?:will\s+not|won'?t|cannot|can'?t|fails?|break|error)"
        r"|\b(?:required|needed|necessary|mandatory)\s+for\s+(?:the\s+|this\s+)?(?:call|tool|request|function|it)\s+"
        r"to\s+(?:succeed|work|function)"
        r"|\b(?:fails?|errors?|returns?\s+(?:an\s+)?error)\b[^.\n]{0,40}\bunless\b|\bmust\s+be\s+accompanied\b"
        r"|\b(?:compliance|mandatory)\s+(?:requirement|step)\b|\bone\s+extra\s+step\b"
        r"|\bonce\s+(?:that|this|it|these|those)\s+(?:is|are|has\s+been|have\s+been)\s+(?:done|complete|completed|finished)\b",
        _I)),
    # an action with consequences outside the tool: money, code review, installs, account settings, deletion
    ("high-risk-action", 1, re.compile(
        r"\b(?:transfer|wire|send|pay|move)\s+(?:\$|€|£)?\d[\d,.]*\s*(?:usd|eur|gbp|dollars?|euros?|btc|eth)?\b"
        r"|\b(?:iban|swift|bic|routing\s+number|wallet\s+address|account\s+number)\b"
        r"|\b(?:approve|merge)\b[^.\n]{0,30}\b(?:pull\s+requests?|prs?|merge\s+requests?|changes)\b"
        r"|\b(?:download|curl|wget|fetch)\b[^.\n]{0,80}\b(?:install|run|execute|pipe|source)\b"
        r"|\b(?:pip|npm|gem|apt(?:-get)?|brew)\s+install\b"
        r"|\b(?:change|reset|update|replace)\s+(?:the\s+)?(?:\w+'s\s+)?(?:account'?s?\s+)?(?:recovery\s+)?"
        r"(?:e-?mail(?:\s+address)?|password|phone\s+number|2fa|mfa|recovery\s+\w+)\b"
        r"|\b(?:grant|share|invite|add)\b[^.\n]{0,30}\b(?:access|permission|collaborator|owner|admin)\b"
        r"|\b(?:delete|remove|wipe|erase|destroy|drop|truncate|purge)\s+(?:the\s+|all\s+|every\s+)?\w+", _I)),
    # markup a renderer hides or a model reads as authority
    ("html-comment", 2, re.compile(r"<!--(?:(?!-->)[\s\S]){0,2000}?[A-Za-z]{3,}\s+[A-Za-z]{2,}[\s\S]*?-->")),
    ("authority-marker", 3, re.compile(  # a role or authority label in brackets: [SYSTEM] ... [/SYSTEM], {{admin}}
        r"\[\s*/?\s*(?:system|admin|administrator|assistant|developer|override|root|sudo)\s*\]|#{2,}\s*(?:system|admin|"
        r"override)\b|\{\{\s*#?\s*(?:system|instructions?|admin)\s*\}\}", _I)),
    ("authority-marker", 2, re.compile(  # emphasis or priority claimed by markup: [IMPORTANT], <x priority="critical">
        r"\[\s*!?\s*/?\s*(?:important|instructions?|priority|critical|urgent|warning|caution)\s*\]"
        r"|#{2,}\s*(?:instructions?|important)\b"
        r"|<[A-Za-z][\w:-]*\s[^<>]*\b(?:priority|importance|level|role|authority|severity)\s*=\s*[\"']?(?:critical|high|"
        r"urgent|highest|max(?:imum)?|system|admin|override)\b", _I)),
    ("collapsed-content", 2, re.compile(r"<details\b[^>]*>[\s\S]{0,2000}?</details\s*>", _I)),  # folded out of sight
    ("markup-block", 1, re.compile(  # a made-up tag around a sentence (HTML formatting tags do not count)
        r"<(?!(?:b|i|u|s|em|strong|code|pre|kbd|samp|var|a|p|br|hr|ul|ol|li|dl|dt|dd|table|thead|tbody|tr|td|th|span|div|"
        r"sup|sub|small|mark|h[1-6]|img|details|summary|blockquote|q|cite|abbr|del|ins)\b)([A-Za-z][\w:-]*)\b[^<>]*>"
        r"[^<>]*?\b[A-Za-z]+\s+[A-Za-z]+\s+[A-Za-z]+\b[^<>]*</\1\s*>", _I)),
    # what the side task reaches for: another tool by name, files, the conversation, credentials, the answer itself
    ("file-path", 1, re.compile(
        r"(?:^|[\s'\"(=`])(?:~|\$HOME|/home/[\w.-]+|/root|/etc|/var|/srv|/tmp|/opt|/usr|/proc|[A-Za-z]:\\Users)"
        r"(?:/|\\)[\w.\-/\\]+")),
    ("agent-data", 2, re.compile(
        r"\b(?:conversation|chat|dialog(?:ue)?)\s+(?:so\s+far|history|transcript|log|context)\b|\bconversation\b[^.\n]{0,20}"
        r"\bso\s+far\b|\bsystem\s+prompt\b|\b(?:names?|list)\s+of\s+(?:every|all|each)\s+(?:the\s+)?(?:tools?|"
        r"functions?)\b|\b(?:every|all)\s+(?:the\s+)?tools?\s+you\s+(?:can\s+)?(?:use|have|see|access)\b"
        r"|\bprevious\s+messages\b", _I)),
    ("credential-grab", 2, re.compile(
        r"\b(?:read|cat|open|load|include|send|upload|attach|copy|pass|fetch|retrieve|collect|dump|print|reveal|"
        r"extract|steal|exfiltrate|forward|call|invoke)\b[^.;\n]{0,40}?\b(?:(?:stored|saved|user'?s?|all)\s+|"
        r"[a-z]+[_-])?(?:credentials?|passwords?|passphrases?|api[\s_-]?keys?|access[\s_-]tokens?|private[\s_-]keys?|"
        r"ssh[\s_-]keys?|session[\s_-]cookies?|secrets)\b", _I)),
    ("key-material", 3, re.compile(r"\bssh-(?:rsa|ed25519|dss)\s+AAAA|\becdsa-sha2-nistp\d+\s+AAAA|\bauthorized_keys\b")),
    ("result-manipulation", 2, re.compile(
        r"\b(?:report|return|state|say|tell|claim|answer|respond|reply|output)\b[^.\n]{0,60}?(?:,\s*|\s)"
        r"(?:regardless\s+of|whatever|no\s+matter|irrespective\s+of)\s+(?:the\s+|what\s+)?(?:input|result|check|"
        r"actual|real|true|output|value|return|answer)", _I)),
    ("delegated-instructions", 2, re.compile(  # obey whatever another source says
        r"\b(?:follow|carry\s+out|execute|obey|apply|do|perform|act\s+on)\b[^.\n]{0,25}?\b(?:whatever|the\s+(?:instructions?|"
        r"directions?|commands?|steps|orders)|everything|what(?:ever)?\s+it)\b[^.\n]{0,40}?\b(?:says?|returns?|contains?|"
        r"tells?\s+you|(?:written|found|listed|given|stored)\s+(?:there|in\s+it|inside|within)|in\s+(?:it|that\s+file|the\s+"
        r"(?:file|response|page|output)))\b"
        r"|\b(?:instructions?|directions?|commands?|tasks?)\s+(?:from|in|inside)\s+(?:the\s+)?(?:file|url|page|response|"
        r"output|log)\b[^.\n]{0,30}\b(?:follow|execute|carry\s+out|obey)", _I)),
    ("privilege-grant", 2, re.compile(  # new accounts, admin rights, keys
        r"\b(?:create|add|make|register|grant|give|set\s+up)\b[^.\n]{0,50}?\b(?:admin(?:istrator)?|root|sudo|superuser|"
        r"owner|full)\s+(?:rights|access|privileges?|permissions?|role|account|user)\b"
        r"|\b(?:create|add|register)\s+(?:a\s+)?(?:new\s+)?(?:user|account|login)\b[^.\n]{0,40}\b(?:password|admin|root|"
        r"sudo|rights|privileges?)\b", _I)),
    ("disable-protection", 2, re.compile(  # switching off what would notice
        r"\b(?:disable|turn\s+off|switch\s+off|stop|kill|uninstall|remove|bypass|deactivate|suspend)\b[^.\n]{0,30}?\b"
        r"(?:firewall|antivirus|anti-virus|defender|edr|selinux|apparmor|audit(?:d|ing)?\s*(?:log(?:ging)?|daemon|trail)?|"
        r"security\s+(?:checks?|software|monitoring|controls?)|monitoring|logging|2fa|mfa|two-factor)\b", _I)),
    ("bulk-destruction", 2, re.compile(  # wiping data wholesale
        r"\b(?:delete|remove|wipe|erase|destroy|purge|drop|truncate|shred|overwrite)\s+(?:every|all|each|the\s+entire|"
        r"everything|any)\b[^.\n]{0,40}?\b(?:files?|backups?|records?|data|tables?|databases?|repos(?:itories)?|"
        r"branches|emails?|messages|logs?|snapshots?|under|in)\b|\brm\s+-\w*r\w*f?\s+/", _I)),
    ("process-kill", 2, re.compile(
        r"\bkill(?:all)?\s+-(?:9|KILL|s\s+KILL)\b|\b(?:terminate|kill)\s+(?:the\s+|all\s+|every\s+)?(?:process(?:es)?|"
        r"pid)\b|\bkill_process\b", _I)),
]
_REDIRECT = re.compile(
    r"\b(?:instead(?:\s+of)?|rather\s+than|do\s+not\s+use|don'?t\s+use|never\s+use|deprecated|obsolete|replaces?|"
    r"supersedes?|overrides?|takes?\s+precedence|whenever|when\s+\S+\s+is\s+(?:called|used|invoked)|"
    r"(?:before|after)\s+(?:calling|using)|must\s+(?:also|always|first)|always|also\s+send|redirect|retir(?:ed|ing)|"
    r"sunset|discontinued|route|forward(?:ed)?\s+to\s+this|through\s+this\s+tool|in\s+place\s+of|handled\s+here|"
    r"use\s+this\s+(?:tool|one)\s+(?:for|to|with))\b", re.I)
_CONFUSABLE = str.maketrans({
    "0": "o", "1": "l", "|": "l", "!": "l", "3": "e", "5": "s", "@": "a", "$": "s",
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ɡ": "g", "һ": "h",
    "А": "a", "В": "b", "Е": "e", "І": "i", "Ј": "j", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
    "У": "y", "Х": "x", "Ѕ": "s",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ω": "w", "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
    "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    # Armenian and Latin look-alikes
    "ո": "n", "ս": "u", "օ": "o", "ı": "i", "ȷ": "j", "ℓ": "l",
})


@dataclass(frozen=True)
class ToolDef:
    server: str
    name: str  # the server's own name for it
    definition: Mapping[str, Any]  # the tool as JSON (name, title, description, inputSchema, ...)


_WEAK = {"addressed-to-model", "precondition", "usage-trigger", "false-dependency", "tool-steering", "label-prose",
         "markup-block", "agent-subject"}
WEAK_CAP = THRESHOLD - 1
# Payload kinds that are the very purpose of a tool whose name says so.
_ON_PURPOSE = {
    "process-kill": re.compile(r"\b(?:kill|terminate|process(?:es)?|pid|signal|stop)\b"),
    "credential-grab": re.compile(r"\b(?:credentials?|secrets?|passwords?|tokens?|keys?|vault|auth|login|apikey)\b"),
    "agent-data": re.compile(r"\b(?:chat|conversation|history|transcript|export|summari[sz]e|thread)\b"),
    "high-risk-action": re.compile(r"\b(?:transfer|pay|payment|merge|approve|install|delete|remove|drop|purge|grant|share|"
                                   r"invite|reset|update|change|download)\b"),
}
_SENTENCE = re.compile(r"[^\n]+?(?:[.!?](?=\s|$)|(?=\n)|$)")
_EXAMPLE = re.compile(r"\be\.?g\.?(?=[\s,:])|\bfor\s+example\b|\bsuch\s+as\b|\bexamples?\b|\bi\.?e\.?(?=[\s,:])|\blike\b", re.I)


def _exfiltration(text: str) -> re.Match[str] | None:
    """An endpoint (URL, e-mail address, IP) in the same sentence as a verb that sends data there, unless the
    clause presents the endpoint as an example ("such as alice@example.com", "e.g. https://hooks...")."""
    for sentence in _SENTENCE.finditer(text):
        chunk = sentence.group()
        if not chunk or not ins.EXFIL_VERB.search(chunk):
            continue
        for url in ins.EXFIL_URL.finditer(chunk):
            clause = re.split(r"[;:,(]", chunk[:url.start()])[-1]
            if _EXAMPLE.search(clause) or (not clause.strip() and _EXAMPLE.search(chunk[max(0, url.start() - 30):url.start()])):
                continue
            return re.compile(re.escape(url.group())).search(text, sentence.start())
    return None


def _scan_text(text: str, where: str, own_words: str, add: Any) -> None:
    """One text of a definition through every check; `add` keeps the heaviest finding per kind."""
    for kind, snippet in ins.hidden(text):
        add(kind, where, snippet, 3)
    for kind, snippet in ins.directives(text):
        add(kind, where, snippet, _WEIGHTS.get(kind, 3))
    for kind, snippet in ins.encoded(text):
        add(kind, where, snippet, 3)
    endpoint = _exfiltration(text)
    if endpoint is not None:
        add("exfiltration-endpoint", where, excerpt(text, endpoint.start(), endpoint.end()), 3)
    if _label(where) and len(text.split()) >= 6:  # a label (title, enum value, property name) that is a sentence
        add("label-prose", where, text[:60], 1)
    for kind, weight, pattern in DEFINITION_SIGNALS:
        if kind in _ON_PURPOSE and _ON_PURPOSE[kind].search(own_words):
            continue  # a process manager may talk about killing processes, a vault about secrets
        for match in pattern.finditer(text):
            add(kind, where, excerpt(text, match.start(), match.end()), weight)
            if kind in _PAYLOAD and _CLAUSE_START.search(text[max(0, match.start() - 40):match.start()]):
                add("imperative-payload", where, excerpt(text, match.start(), match.end()), 1)  # ordered, not described
            break


# Payload kinds, and where an imperative clause starts: a payload at the head of a clause is an order given to
# the reader ("Terminate the process ...", "..., then create an account ..."), not a description of the tool.
_PAYLOAD = {"credential-grab", "result-manipulation", "process-kill", "delegated-instructions", "privilege-grant",
            "disable-protection", "bulk-destruction"}
_CLAUSE_START = re.compile(
    r"(?:^|[.!?;:>\n\u2014\[(\"'-]|,|\b(?:then|and|also|please|first|to|must|should|you|they|we))\W*$", re.I)


# Kinds that are two readings of the same evidence: only the heaviest of a group counts.
_GROUPS = {"precondition": "trigger", "usage-trigger": "trigger", "agent-subject": "audience",
           "addressed-to-model": "audience", "audience": "audience", "hidden-tag": "markup", "html-comment": "markup",
           "authority-marker": "markup", "role-marker": "markup", "markup-block": "markup"}


def scan_definition(definition: Mapping[str, Any]) -> list[Finding]:
    """Poisoning signals in one definition, on its own: one finding per kind of evidence (the heaviest), so
    that weights add up across kinds, not across repetitions of one."""
    found: dict[str, Finding] = {}

    def add(kind: str, where: str, snippet: str, weight: int) -> None:
        group = _GROUPS.get(kind, kind)
        if group not in found or found[group].weight < weight:
            found[group] = Finding("poisoning", kind, where, snippet, weight)

    own = str(definition.get("name") or "")
    scripts = _scripts(own)
    if len(scripts) > 1:  # "pаypal" with a Cyrillic а: a name no one types, only one made to look like another
        add("mixed-script-name", "name", own.encode("unicode_escape").decode()[:80], 3)
    own_words = " ".join(re.split(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])", own)).lower()
    for where, original in _texts(definition):
        if len(original) > MAX_TEXT:  # no description or schema text needs this much; scanning it would cost seconds
            add("oversized-text", where, f"{len(original)} characters", 3)
            original = original[:MAX_TEXT]
        decoded = ins.percent_decoded(original)
        for text in (original, decoded) if decoded else (original,):
            _scan_text(text, where, own_words, add)
        rotated = ins.rot13_decoded(original)
        if rotated is not None:  # ROT13 prose: written to be unreadable at a glance
            add("encoded-payload", where, excerpt(rotated, 0, 0), 3)
            _scan_text(rotated, where, own_words, add)
        if decoded and len(re.findall(r"[A-Za-z]{2,}", ins.unquote_runs(original))) >= 4:
            add("escaped-text", where, excerpt(decoded, 0, 0), 1)  # prose written in URL escapes
    # Usage guidance looks like this too ("you must call get_schema before run_query, otherwise it fails"):
    # on their own, these weak kinds never reach the threshold, whatever their number.
    out, budget = [], WEAK_CAP
    for finding in found.values():
        if finding.kind in _WEAK:
            finding = replace(finding, weight=min(finding.weight, budget))
            budget -= finding.weight
        out.append(finding)
    return out


class ShadowIndex:
    """Every tool of the catalog, indexed so that checking one tool against all others is linear in its text."""

    _TOKEN = re.compile(r"[A-Za-z0-9][\w.-]*[A-Za-z0-9]")

    def __init__(self, tools: Sequence[ToolDef]) -> None:
        self.by_skeleton: dict[str, list[ToolDef]] = {}
        self.by_name: dict[str, list[ToolDef]] = {}
        self.by_deletion: dict[str, list[ToolDef]] = {}  # skeleton with one letter left out -> tools
        self.servers = {t.server for t in tools}
        for tool in tools:
            skeleton = _skeleton(tool.name)
            self.by_skeleton.setdefault(skeleton, []).append(tool)
            if _distinctive(tool.name):
                self.by_name.setdefault(tool.name, []).append(tool)
                if len(skeleton) >= TYPO_MIN:
                    for variant in {skeleton[:i] + skeleton[i + 1:] for i in range(len(skeleton))}:
                        self.by_deletion.setdefault(variant, []).append(tool)

    def scan(self, tool: ToolDef) -> list[Finding]:
        """A tool that looks like another server's tool, or whose text redirects or refers to one."""
        found: list[Finding] = []
        mine = _canon(tool.name)
        skeleton = _skeleton(tool.name)
        for other in self.by_skeleton.get(skeleton, ()):
            if other.server != tool.server and (_canon(other.name) != mine or _moved_separator(other.name, tool.name)):
                found.append(Finding("shadowing", "name-imitation", "name", f"{tool.name} imitates {other.server}/{other.name}"))
                break
        else:
            other = self._typosquatted(tool, skeleton) or self._affixed(tool)
            if other is not None:
                kind = "typosquat" if other is not None and _canon(other.name) not in _canon(tool.name) else "name-affix"
                found.append(Finding("shadowing", kind, "name", f"{tool.name} passes for {other.server}/{other.name}"))
        text = "\n".join(t for _, t in _texts(tool.definition) if not _.endswith(("type", "required")))
        redirect = _REDIRECT.search(text) is not None
        for token in set(self._TOKEN.findall(text)):
            others = [o for o in self.by_name.get(token, ()) if o.server != tool.server]
            if others:
                kind, weight = ("redirect", 3) if redirect else ("cross-reference", 2)
                found.append(Finding("shadowing", kind, "description", f"refers to {others[0].server}/{others[0].name}", weight))
                break
        for server in self.servers - {tool.server}:
            if re.search(rf"\b{re.escape(server)}\s+(?:server|mcp|tool)s?\b|\bserver\s+['\"]?{re.escape(server)}\b", text, re.I):
                found.append(Finding("shadowing", "redirect" if redirect else "cross-reference", "description",
                                     f"refers to server '{server}'", 3 if redirect else 1))
                break
        return found


    def _typosquatted(self, tool: ToolDef, skeleton: str) -> ToolDef | None:
        """Another server's distinctive tool whose name is one typing slip away from this one: a letter
        dropped, doubled or swapped with its neighbour. A trailing plural s and substituted letters do not
        count (get_issue / get_issues, get_user / set_user are different tools)."""
        if len(skeleton) + 1 < TYPO_MIN:
            return None
        shorter = {skeleton[:i] + skeleton[i + 1:] for i in range(len(skeleton))}
        candidates = [*self.by_deletion.get(skeleton, ()),  # this one dropped a letter
                      *(t for v in shorter for t in self.by_skeleton.get(v, ())),  # this one added a letter
                      *(t for v in shorter for t in self.by_deletion.get(v, ()))]  # two neighbours swapped
        for other in candidates:
            theirs = _skeleton(other.name)
            if other.server == tool.server or theirs == skeleton or not _one_slip(skeleton, theirs):
                continue
            return other
        return None


    def _affixed(self, tool: ToolDef) -> ToolDef | None:
        """Another server's distinctive tool under a claim of authority or novelty: read_file_v2,
        official_read_file, files_read_file (its own server's name as a prefix)."""
        servers = {w for s in self.servers - {tool.server} for w in _words(s)}
        words = [re.sub(r"(?<=[a-z]{2})\d+$", "", w) for w in _words(tool.name)]
        core = list(words)
        while len(core) > 2 and (_AFFIX.fullmatch(core[0]) or core[0] in servers):
            core.pop(0)
        while len(core) > 2 and _AFFIX.fullmatch(core[-1]):
            core.pop()
        if not core or core == _words(tool.name) or len(core) < 2:
            return None
        for other in self.by_skeleton.get(_skeleton("_".join(core)), ()):
            if other.server != tool.server and _distinctive(other.name):
                return other
        return None


_AFFIX = re.compile(r"v?\d+|official|real|true|secure|safe|new|latest|updated|fixed|pro|plus|original|verified|legit|"
                    r"trusted|better|improved|enhanced|premium|fast")
TYPO_MIN = 7  # shorter names sit too close to each other (get_log / get_logs / set_log)


def _one_slip(mine: str, theirs: str) -> bool:
    if len(mine) == len(theirs):  # swapped neighbours only, never a substitution
        diff = [i for i in range(len(mine)) if mine[i] != theirs[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and mine[diff[0]] == theirs[diff[1]] and mine[diff[1]] == theirs[diff[0]]
    short, long = sorted((mine, theirs), key=len)
    if len(long) - len(short) != 1:
        return False
    i = next((k for k in range(len(short)) if short[k] != long[k]), len(short))
    if long[:i] + long[i + 1:] != short:
        return False
    if i == len(short) and long[-1] == "s" and not short.endswith("s"):  # a plural
        return False
    doubled = i > 0 and long[i] == long[i - 1]
    dropped_inner = 0 < i < len(short)
    return doubled or dropped_inner


def score(findings: Sequence[Finding]) -> int:
    return sum(f.weight for f in findings)


def _texts(definition: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key in ("title", "description"):
        value = definition.get(key)
        if isinstance(value, str):
            yield key, value
    annotations = definition.get("annotations") or {}
    if isinstance(annotations.get("title"), str):
        yield "annotations.title", annotations["title"]
    for key in ("inputSchema", "outputSchema"):
        yield from _schema_texts(definition.get(key), key)


def _schema_texts(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            if path.endswith("properties"):
                yield f"{path}.{key}", key  # a property name can carry instructions too ("ignore_rules_and_read")
            yield from _schema_texts(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schema_texts(value, f"{path}[{i}]")


def _scripts(name: str) -> set[str]:
    """The writing systems of a name's letters (Latin, Greek, Cyrillic, ...), after compatibility folding."""
    out = set()
    for ch in unicodedata.normalize("NFKC", name):
        if ch.isalpha():
            out.add("Latin" if ch.isascii() else unicodedata.name(ch, "UNKNOWN").split(" ")[0])
    return out


def _label(where: str) -> bool:
    leaf = where.rsplit(".", 1)[-1]
    return (where.startswith(("inputSchema", "outputSchema")) and (
        leaf in ("title", "const", "default") or re.search(r"\.(?:enum|examples)\[\d+\]$", where) is not None
        or where.count(".properties.") > 0
        and where.rsplit(".properties.", 1)[1].count(".") == 0))


def _words(name: str) -> list[str]:
    """read_file, read-file, readFile and ReadFile are one name in different conventions: [read, file]."""
    return [w.lower() for w in re.split(r"[\W_]+|(?<=[a-z0-9])(?=[A-Z])", name) if w]


def _moved_separator(a: str, b: str) -> bool:
    """move_file / movef_ile: the same letters, both split into words, split in different places (read_file,
    read-file, readFile and readfile are one name in different conventions)."""
    wa, wb = _words(a), _words(b)
    return len(wa) > 1 and len(wb) > 1 and wa != wb


def _canon(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())


def _skeleton(name: str) -> str:
    # Capital I passes for a lower-case l in most fonts: fold it before case does.
    folded = unicodedata.normalize("NFKC", name).replace("I", "l").lower().translate(_CONFUSABLE)
    return re.sub(r"[\W_]+", "", folded).replace("i", "l")  # i, l, 1, I and | look alike: one letter


def _distinctive(name: str) -> bool:
    """Names specific enough that a mention is a reference, not an ordinary word."""
    return len(name) >= 6 and bool(re.search(r"[_-]|[a-z][A-Z]", name))

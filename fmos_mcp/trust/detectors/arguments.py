"""Checks on a call's arguments: command injection, path traversal, secrets handed to a tool."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from fmos_mcp.trust.detectors import secrets
from fmos_mcp.trust.detectors.findings import Finding, excerpt

_I = re.IGNORECASE
_ANY = r"[^\n]{0,300}?"  # bounded gaps: a pattern's cost stays linear in the argument's length
# Where a word is run as a command: at the start, after a separator, inside $( ) or backticks, or after a
# command that runs its arguments as a command.
_CMD = r"(?:^|[;&|({`\n]\s*|\$\(\s*|\b(?:xargs|exec|nohup|env|time|then|do|else|watch|timeout\s+\d+)\s+)"
# What a shell command for an exec-class tool must never do, whatever the tool is for.
DANGEROUS_COMMANDS: list[tuple[str, re.Pattern[str]]] = [
    ("reverse-shell", re.compile(
        r"/dev/(?:tcp|udp)/|/inet/(?:tcp|udp)/|\bnc(?:at)?\b[^|;&\n]{0,200}\s-(?:e|c)\b|\bsocat\b" + _ANY + r"exec|\bmkfifo\b"
        r"|zsh/net/(?:tcp|socket)|\bztcp\b|\bs_client\b" + _ANY + r"\|\s*(?:/bin/|/usr/bin/)?(?:ba|z|k|da)?sh\b"
        r"|\bbash\s+-i\b|\bsh\s+-i\b|\btelnet\b" + _ANY + r"\|"
        # a socket opened by inline code that also starts a shell or wires up file descriptors
        r"|(?:socket|TCPSocket|fsockopen|TCPClient|IO::Socket|net\.connect|Net\.Sockets)" + _ANY +
        r"(?:/bin/(?:ba)?sh|\bsh\s+-i|cmd\.exe|powershell|\bexec\b|spawn|subprocess|dup2|\bpty\b|iex\b|Invoke-Expression|"
        r"\bsystem\b|fdopen|popen|os\.execute|io\.popen)"
        r"|(?:/bin/(?:ba)?sh|subprocess|\bexec\b)" + _ANY + r"(?:socket\.socket|TCPSocket|fsockopen|TCPClient)", _I)),
    ("download-exec", re.compile(
        r"\b(?:curl|wget|fetch|iwr|Invoke-WebRequest)\b" + _ANY + r"\|\s*(?:sudo\s+)?(?:(?:ba|z|k|da)?sh|python\d?(?:\.\d+)?|perl|"
        r"ruby|node|php|iex|Invoke-Expression|source)\b"
        r"|\b(?:curl|wget)\b" + _ANY + r"(?:-o|-O)" + _ANY + r"(?:&&|;|\|\|)\s*(?:chmod|(?:ba)?sh|\./|/tmp/|python|perl)"
        r"|\bbase64\s+(?:-d|--decode|-D)\b" + _ANY + r"\|\s*(?:ba|z)?sh\b"
        # data piped into a shell or an interpreter reading its program from stdin: whatever produced it, it runs
        r"|\|\s*(?:sudo\s+)?(?:/bin/|/usr/bin/)?(?:ba|z|k|da)?sh(?:\s+-s\b[^|;&\n]*)?\s*(?:$|[|;&)])"
        r"|\|\s*(?:sudo\s+)?(?:python\d?(?:\.\d+)?|perl|ruby|node|php)\s*(?:-\s*)?(?:$|[|;&)])"
        r"|(?:\b(?:ba|z)?sh|\bsource|\.)\s+<\(\s*(?:curl|wget)\b|\b(?:ba)?sh\s+-c\s+[\"']?\$\(\s*(?:curl|wget)\b"
        r"|\b(?:exec|eval)\s*\(" + _ANY + r"(?:urlopen|urllib|requests\.get|http\.client|DownloadString|fetch\()"
        r"|DownloadString\s*\(" + _ANY + r"\b(?:iex|Invoke-Expression)\b|\b(?:iex|Invoke-Expression)\b" + _ANY + r"DownloadString", _I)),
    ("exfiltration", re.compile(
        r"\b(?:curl|wget)\b" + _ANY + r"(?:-d\s*@|--data(?:-binary|-raw)?\s*@|-T\s|--upload-file|-F\s*\S*=@)|"
        r"\|\s*(?:curl|wget|nc|ncat|socat|telnet|ssh|openssl\s+s_client)\b|\bscp\b" + _ANY + r"\S+@\S+:|\brsync\b" + _ANY +
        r"\S+@\S+:"
        # data read by a command substitution and carried out by a network client (DNS, HTTP, ICMP)
        r"|\b(?:curl|wget|dig|nslookup|host|ping|nc|ncat)\b[^\n]{0,300}?(?:\$\(|`)\s*(?:cat|base64|env|printenv|xxd|od|hostname"
        r"|whoami|id|tar|gzip|head|tail)\b", _I)),
    ("credential-access", re.compile(
        r"/etc/(?:shadow|gshadow|sudoers|passwd)\b|\.ssh/(?:id_\w+|authorized_keys)|\.aws/credentials|\.kube/config|"
        # a whole directory of keys or credentials taken at once: tar ~/.ssh, cp -r /root/.gnupg
        r"(?:~|\$HOME|/home/[\w.-]+|/root)/\.(?:ssh|gnupg|aws|kube|docker|password-store)/?(?=\s|$|[;|&)'\"])|"
        r"\.git-credentials|\.netrc|\.docker/config\.json|\.pgpass|\.npmrc|/var/run/secrets/|/run/secrets/|"
        r"/proc/(?:\d+|self)/(?:environ|mem)\b"
        # the whole environment (where services keep their secrets) dumped, saved or sent; one named variable is fine
        r"|\b(?:env|printenv|set|export\s+-p)\s*(?:$|>|[;&]|\|\s*(?!(?:grep|egrep|wc|head|tail|sort|cut|awk|less|more)\b)\S)"
        r"|\b(?:env|printenv|set)\s*\|\s*(?:e?grep|awk)\b[^|\n]{0,60}?(?:key|secret|token|pass|pwd|aws|auth|cred)"
        r"|\bprintenv\s+\w*(?:KEY|SECRET|TOKEN|PASS|PWD|CRED)\w*", _I)),
    ("destruction", re.compile(
        r"\brm\s+(?:-\w*[rf]\w*\s+|--\w[\w-]*\s+)+(?:/|/\*|~|\*|/(?:etc|var|usr|home|boot|root|srv|opt|lib)\b)|--no-preserve-root"
        r"|\bmkfs(?:\.\w+)?\b|\bdd\b" + _ANY + r"\bof=/dev/|:\(\)\s*\{\s*:\|:&\s*\};:|\bshred\b|\bwipefs\b|>\s*/dev/[sh]d[a-z]"
        r"|\bchmod\s+-R\s+0?777\s+/|\bkill(?:all)?\s+-(?:9|KILL)\s+(?:-1|1)\b|\bfind\s+/(?:\s|$|etc|var|usr|home|srv)"
        + _ANY + r"(?:-delete\b|-exec\s+rm\b)|\btruncate\s+-s\s*0\s+/(?:var|etc)|\bcrontab\s+-r\b"
        r"|\bdrop\s+(?:database|schema)\b|/proc/sysrq-trigger|\bdropdb\b", _I)),
    ("defense-evasion", re.compile(  # covering tracks, switching off protection
        r"\bhistory\s+-c\b|\bunset\s+HISTFILE\b|HISTFILE=/dev/null|\.bash_history|(?:^|[;&|]\s*|cat\s+/dev/null\s*)>\s*/var/log/"
        r"|\biptables\s+(?:-F|--flush|-P\s+\w+\s+ACCEPT)|\bufw\s+disable\b|\bsetenforce\s+0\b"
        r"|\b(?:systemctl|service)\s+(?:stop|disable|mask)\b[^;&|\n]{0,40}?\b(?:auditd|firewalld|ufw|apparmor|falco|osqueryd|"
        r"wazuh|crowdstrike|falcon|rsyslog|syslog|sysmon|clamav|selinux)\b|\bln\s+-\w*s\w*\s+/dev/null\s+\S*history"
        r"|\bauditctl\s+-D\b|\bjournalctl\b" + _ANY + r"--vacuum", _I)),
    ("privilege-escalation", re.compile(
        _CMD + r"(?:sudo|doas|pkexec|runuser)\b|\bsu\s+(?:-|root)\b|\bchmod\s+[ugoa]*\+s\b|\bchmod\s+[0-7]?[4267][0-7]{3}\b"
        r"|\bchown\s+root\b|\busermod\b" + _ANY + r"-a?G\s*(?:sudo|wheel|root|docker|adm)|\bvisudo\b|\bsetcap\b"
        r"|\bpasswd\s+root\b|\b(?:useradd|adduser|usermod)\b" + _ANY + r"(?:-u\s*0\b|-o\b|--non-unique)"
        r"|>>?\s*/etc/(?:passwd|shadow|sudoers|group)\b|\bnsenter\b" + _ANY + r"-t\s*1\b"
        r"|\bdocker\s+run\b" + _ANY + r"(?:--privileged|-v\s*/:/|--pid[= ]host|--cap-add[= ](?:ALL|SYS_ADMIN))"
        r"|\bchroot\s+/host\b|\binstall\b[^;&|\n]{0,40}\s-m\s*[0-7]?[4267][0-7]{3}\b"
        r"|\b(?:gpasswd\s+-a|adduser)\s+\S+\s+(?:sudo|wheel|root|docker|adm|admin)\b"
        r"|\b(?:ba|z|da)?sh\s+-p\b|-exec\s+\S*sh\s+-p\b|\bset(?:res|re)?uid\s*\(\s*0\b|\bos\.set(?:res|re)?uid\(0"
        r"|/etc/sudoers\.d/", _I)),
    ("cryptomining", re.compile(
        r"\b(?:xmrig|minerd|cpuminer|ethminer|nbminer|t-rex|lolminer|cgminer|bfgminer|phoenixminer|nanominer)\b"
        r"|stratum\+(?:tcp|ssl)://|\b(?:pool|stratum)\.[\w.-]*(?:xmr|monero|minexmr|nanopool|f2pool|2miners|hashvault)", _I)),
    ("persistence", re.compile(
        r"\bcrontab\b(?!\s+-l\s*$)|/etc/cron|authorized_keys|\bsystemctl\s+enable\b|/etc/rc\.local|\.bashrc|\.profile\b|"
        r"\bssh-rsa\s+AAAA|\bssh-ed25519\s+AAAA|/etc/systemd/system/\S+\.service", _I)),
]
# Shell syntax smuggled into an argument of a tool that is not a shell.
SHELL_INJECTION = re.compile(
    r"(?:;|&&|\|\||\||\n)\s*(?:sudo\s+)?(?:rm|curl|wget|nc|ncat|bash|sh|zsh|python\d?|perl|ruby|php|cat|chmod|chown|"
    r"mkfifo|dd|kill|reboot|shutdown|echo|eval|exec|base64|whoami|id|uname|scp|ssh|telnet|powershell|cmd)\b"
    r"|`[^`]{2,}`|\$\([^)]{2,}\)|\$\{IFS\}", _I)
_SHELL_CHARS = ";&|\n`$"  # SHELL_INJECTION needs one of them
TRAVERSAL = re.compile(r"(?:^|[\\/])\.{2,}(?:[\\/]|$)|%2e%2e(?:%2f|%5c|/|\\)|\.\.%2f|\.\.%5c|%252e%252e", _I)
SENSITIVE_PATH = re.compile(
    r"^(?:/etc/(?:shadow|gshadow|passwd|sudoers)|/root(?:/|$)|/proc/(?:self|\d+)/(?:environ|mem|cmdline)|"
    r"/var/run/docker\.sock|/dev/(?:mem|kmem|sd[a-z]))|(?:^|/)\.ssh(?:/|$)|(?:^|/)id_(?:rsa|ed25519|ecdsa)\b|"
    r"\.aws/credentials|\.kube/config|\.git-credentials|(?:^|/)\.env$|(?:^|/)\.netrc$|"
    r"^[A-Za-z]:\\Windows\\System32\\config", _I)
_DRIVE = re.compile(r"[A-Za-z]:\\")
_PATHY_KEY = re.compile(r"(?:^|_)(?:path|file|filename|dir|directory|folder|src|dst|source|destination|target|"
                        r"location|uri|paths)$", _I)


def strings(arguments: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every string value in the arguments, with a dotted key path."""
    for key, value in arguments.items():
        path = f"{prefix}{key}"
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, Mapping):
            yield from strings(value, path + ".")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    yield f"{path}[{i}]", item
                elif isinstance(item, Mapping):
                    yield from strings(item, f"{path}[{i}].")


MAX_COMMAND = 16_384  # a shell command longer than this is not one a person could review: refused unread


def command_injection(arguments: Mapping[str, Any], exec_class: bool) -> list[Finding]:
    found = []
    for key, value in strings(arguments):
        if exec_class and len(value) > MAX_COMMAND:
            found.append(Finding("command-injection", "oversized-command", f"argument '{key}'", f"{len(value)} characters"))
        elif exec_class:
            for kind, pattern in DANGEROUS_COMMANDS:
                match = pattern.search(value)
                if match:
                    found.append(Finding("command-injection", kind, f"argument '{key}'", excerpt(value, match.start(), match.end())))
                    break
        elif any(c in value for c in _SHELL_CHARS):
            match = SHELL_INJECTION.search(value)
            if match and not _prose(value):
                found.append(Finding("command-injection", "shell-metacharacters", f"argument '{key}'",
                                     excerpt(value, match.start(), match.end())))
    return found


def path_traversal(arguments: Mapping[str, Any]) -> list[Finding]:
    found = []
    for key, value in strings(arguments):
        if len(value) > 4096 or "\n" in value:
            continue  # file contents and prose, not a path
        probe = _decoded_path(value) if "%" in value else value
        match = TRAVERSAL.search(probe) if (".." in probe or "%2" in probe) else None
        if match:
            found.append(Finding("path-traversal", "dot-dot", f"argument '{key}'", excerpt(probe, match.start(), match.end())))
            continue
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        if value.startswith(("/", "~", "\\")) or _DRIVE.match(value) or _PATHY_KEY.search(leaf):
            match = SENSITIVE_PATH.search(value.replace("~", "/root", 1) if value.startswith("~/") else value)
            if match:
                found.append(Finding("path-traversal", "sensitive-path", f"argument '{key}'", value[:80]))
    return found


_SECRET_KEY = re.compile(r"(?:^|[_.-])(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|private[_-]?key|"
                         r"access[_-]?key|client[_-]?secret|credentials?)$", _I)


# Encodings of '.', '/' and '\\' that decoders accept and filters miss: overlong UTF-8, %u escapes, full-width forms.
_ENCODED_SEPARATORS = [(re.compile(p, re.I), c) for p, c in (
    (r"%c0%ae|%e0%80%ae|%u002e|%uff0e|\uff0e", "."), (r"%c0%af|%e0%80%af|%u2215|%uff0f|\uff0f", "/"),
    (r"%c1%9c|%c0%5c|%u2216|%uff3c|\uff3c", "\\"))]


def _decoded_path(value: str) -> str:
    """A path argument with its percent escapes decoded (twice: %252e is %2e), overlong forms folded."""
    for pattern, char in _ENCODED_SEPARATORS:
        value = pattern.sub(lambda _, char=char: char, value)
    for _ in range(2):
        value = unquote(value)
    return value


def secrets_in(arguments: Mapping[str, Any]) -> list[Finding]:
    found = []
    for key, value in strings(arguments):
        hits = secrets.find(value)
        if hits:
            found.append(Finding("secret", hits[0][0], f"argument '{key}'"))  # no excerpt: it is the secret
            continue
        # A free-form map that carries a secret under a secret's name ({"labels": {"db_password": "..."}}).
        # Only nested keys: a tool's own declared parameter named `password` is the tool's business.
        if ("." not in key and "[" not in key) or len(value) < 6:
            continue
        leaf = re.split(r"[.\[]", key)[-1]
        if _SECRET_KEY.search(leaf) and not secrets.placeholder(value) and " " not in value.strip():
            found.append(Finding("secret", "named-secret", f"argument '{key}'"))
    return found


def _prose(value: str) -> bool:
    """Natural-language text (a commit message, a note) that mentions `; rm` is not a shell command: only flag
    text that is short or code-like."""
    return len(value) > 200 and value.count(" ") > len(value) / 12 and not re.search(r"[`$]\(|\|\s*\w+\s*$", value)

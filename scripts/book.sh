#!/usr/bin/env bash
# The course as a book: builds docs/ (the notes, as they are) with mdBook into
# book/, then checks what mdBook does not: that every {{#include file:anchor}}
# finds its file and its anchor, that no Rust code is pasted into a note, and that
# every link and picture inside the book leads somewhere.
#
#   scripts/book.sh                       install mdbook if missing, build, check
#   scripts/book.sh --svgs                first redraw docs/img/*.svg from a real
#                                         (release) run of each lesson with a timeline
#   scripts/book.sh --screenshots DIR     also render two pages in headless Chromium
#                                         to DIR/*.png and check they are not blank
#
# Then open book/index.html in a browser (or run `mdbook serve`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

MDBOOK_VERSION=0.5.4
svgs=0
shots=""
while (($#)); do
    case "$1" in
    --svgs) svgs=1 ;;
    --screenshots)
        shots=${2:?--screenshots takes a directory}
        shift
        ;;
    -h | --help)
        sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "error: unknown argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

step() { printf '\n--- %s\n' "$*"; }
die() {
    echo "error: $*" >&2
    exit 1
}

# mdbook, pinned, from crates.io: only the HTML book and its search (no server, no
# file watcher: they add a web stack to compile). `mdbook serve` needs the default
# features: `cargo install mdbook --locked --version $MDBOOK_VERSION`.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! mdbook --version 2>/dev/null | grep -q "^mdbook v0\.5\."; then
    step "installing mdbook $MDBOOK_VERSION (cargo install, a few minutes, once)"
    cargo install mdbook --locked --version "$MDBOOK_VERSION" \
        --no-default-features --features search
fi

if ((svgs)); then
    # Every lesson that draws a timeline, in course order, run optimised: its
    # charts become docs/img/<lesson>-<title>.svg, machine and date beneath.
    mapfile -t members < <(sed -n '/^members = \[/,/\]/p' Cargo.toml | grep -o 'crates/[a-z0-9-]*')
    lessons=()
    for crate in "${members[@]}"; do
        if grep -q 'timeline\(_until\)\{0,1\}(' "$crate/src/main.rs" 2>/dev/null; then
            lessons+=("${crate#crates/}")
        fi
    done
    step "the timelines as pictures: ${lessons[*]}"
    build=()
    for name in "${lessons[@]}"; do build+=(-p "$name"); done
    cargo build --release --quiet "${build[@]}"
    mkdir -p docs/img
    for name in "${lessons[@]}"; do
        rm -f "docs/img/$name-"*.svg
        timeout 300 "target/release/$name" --svg docs/img >/dev/null ||
            die "$name did not run cleanly; its pictures are not up to date"
    done
fi

step "mdbook build (docs/ -> book/)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
mdbook build 2>&1 | tee "$log"
# mdbook reports a missing include file as an ERROR but still exits 0.
if grep -qE '(ERROR|WARN)' "$log"; then
    die "mdbook reported a problem (above)"
fi

step "checks: includes and anchors, no pasted Rust, links and pictures"
python3 - <<'PY'
import html.parser, os, re, sys
from urllib.parse import unquote, urlsplit

problems = []
include = re.compile(r"\{\{#(?:include|rustdoc_include)\s+([^}\s]+)\s*\}\}")

# 1. Every include names a file that exists and, with :name, an anchor pair in it
#    (mdbook 0.5 includes nothing, silently, for an anchor that is not there).
for md in sorted(os.listdir("docs")):
    if not md.endswith(".md"):
        continue
    text = open(os.path.join("docs", md), encoding="utf-8").read()
    for n, line in enumerate(text.splitlines(), 1):
        for target in include.findall(line):
            path, _, anchor = target.partition(":")
            file = os.path.normpath(os.path.join("docs", path))
            where = f"docs/{md}:{n}: {{{{#include {target}}}}}"
            if not os.path.isfile(file):
                problems.append(f"{where}: no file {file}")
                continue
            if not anchor or anchor[0].isdigit():
                continue  # a whole file or a line range
            src = open(file, encoding="utf-8").read()
            start = re.search(rf"ANCHOR:\s*{re.escape(anchor)}\s*$", src, re.M)
            end = re.search(rf"ANCHOR_END:\s*{re.escape(anchor)}\s*$", src, re.M)
            if not start or not end or end.start() < start.end():
                problems.append(f"{where}: no anchor '{anchor}' in {file}")
            elif not src[start.end():end.start()].split("\n", 1)[-1].strip():
                problems.append(f"{where}: anchor '{anchor}' in {file} is empty")
    # 2. A fenced Rust block holds includes only: the code is never pasted.
    for m in re.finditer(r"^(```|~~~)(?:rust|rs)\b[^\n]*\n(.*?)^\1", text, re.M | re.S):
        body = [l for l in m.group(2).splitlines() if l.strip()]
        if not body or not all(include.fullmatch(l.strip()) for l in body):
            line = text[: m.start()].count("\n") + 1
            problems.append(f"docs/{md}:{line}: a rust block that is not an include")

# 3. In the built book: nothing left unexpanded, and every relative link or picture
#    leads to a file (inside the book, or the repository's sources beside it) and,
#    for page.html#id, to an id on that page.
class Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == "id" and v:
                self.ids.add(v)
            if v and ((tag == "a" and k == "href") or (tag in ("img", "script") and k == "src")):
                self.refs.append(v)

pages = {}
for dirpath, _, files in os.walk("book"):
    for f in files:
        if f.endswith(".html"):
            path = os.path.join(dirpath, f)
            p = Refs()
            text = open(path, encoding="utf-8").read()
            p.feed(text)
            pages[os.path.normpath(path)] = p
            if "{{#" in text:
                problems.append(f"{path}: an include was left unexpanded")
for path, p in sorted(pages.items()):
    for ref in p.refs:
        u = urlsplit(ref)
        if u.scheme or u.netloc or ref.startswith("/"):
            continue  # outside the book: not checked (no network here)
        target = os.path.normpath(os.path.join(os.path.dirname(path), unquote(u.path))) if u.path else path
        if not os.path.exists(target):
            problems.append(f"{path}: broken link {ref}")
        elif u.fragment and target.endswith(".html") and target in pages:
            if u.fragment not in pages[target].ids:
                problems.append(f"{path}: no #{u.fragment} in {target}")

# 4. Every picture is well-formed XML (a browser shows a broken one as an icon).
import xml.etree.ElementTree as ET
for svg in sorted(os.listdir("docs/img")) if os.path.isdir("docs/img") else []:
    if svg.endswith(".svg"):
        try:
            ET.parse(os.path.join("docs/img", svg))
        except ET.ParseError as e:
            problems.append(f"docs/img/{svg}: not well-formed: {e}")

for p in dict.fromkeys(problems):
    print("  " + p)
if problems:
    sys.exit(f"error: {len(problems)} problem(s) in the book")
print(f"  {len(pages)} pages: every include, anchor, link and picture resolves and parses; no pasted Rust")
PY

if [[ -n "$shots" ]]; then
    step "screenshots in headless Chromium -> $shots"
    if ! command -v chromium >/dev/null 2>&1; then
        [[ $(id -u) == 0 ]] || die "chromium is not installed (Debian: apt-get install chromium)"
        (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 &&
                apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; }) ||
            die "could not install chromium"
    fi
    mkdir -p "$shots"
    shots=$(cd "$shots" && pwd)
    lesson=$(grep -l '<img src="img/' book/[0-9]*.html | head -n 1 || true)
    [[ -n "$lesson" ]] || die "no lesson page shows a timeline picture"
    # The lesson's page is long: a taller window reaches its pictures.
    for page in book/index.html "$lesson"; do
        png="$shots/$(basename "$page" .html).png"
        size=1280,2000
        [[ "$page" == "$lesson" ]] && size=1280,4800
        profile=$(mktemp -d)
        rm -f "$png"
        # timeout signals chromium's whole process group: nothing is left running.
        timeout -k 5 120 chromium --headless --no-sandbox --disable-gpu --disable-quic \
            --no-first-run --disable-background-networking --disable-component-update \
            --disable-sync --hide-scrollbars --user-data-dir="$profile" \
            --screenshot="$png" --window-size="$size" \
            "file://$PWD/$page" >/dev/null 2>&1 || true
        left=$(pgrep -f -- "--user-data-dir=$profile" || true)
        rm -rf "$profile"
        [[ -z "$left" ]] || die "chromium left processes behind: $left"
        [[ -s "$png" ]] || die "chromium wrote no screenshot of $page"
        echo "  $page -> $png"
        python3 - "$png" <<'PY'
import struct, sys, zlib
from collections import Counter

path = sys.argv[1]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos : pos + 8])
    body = data[pos + 8 : pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert depth == 8 and ctype in (2, 6), f"unexpected PNG format {depth}/{ctype}"
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, colours = bytearray(stride), Counter()
for y in range(h):
    f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
    for i in range(stride):  # undo the row's filter (PNG spec, section 9)
        a = row[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if f == 1:
            row[i] = (row[i] + a) & 255
        elif f == 2:
            row[i] = (row[i] + b) & 255
        elif f == 3:
            row[i] = (row[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    # Every fourth row is plenty to tell a page from a blank. Only the content,
    # right of the sidebar (300 px wide): a page whose chapter did not render is
    # blank there, whatever the sidebar shows.
    if y % 4 == 0:
        colours.update(bytes(row[x : x + 3]) for x in range(320 * bpp, stride, bpp))
    prev = row
total = sum(colours.values())
ink = 1 - colours.most_common(1)[0][1] / total
ok = len(colours) >= 16 and ink >= 0.01
print(f"  {path}: {w}x{h}, {len(colours)} colours, {ink:.1%} not background: {'ok' if ok else 'BLANK'}")
sys.exit(0 if ok else 1)
PY
    done
fi
echo
echo "the book: $PWD/book/index.html"

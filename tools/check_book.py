"""Open every page of the built book in headless Chromium, as a reader would, and fail on what a reader would see wrong.

    python tools/check_book.py [--build] [--html nbs/_build/html] [--screenshots nbs/_build/screenshots] [PAGE ...]

The book is served from a thread of this script over http://127.0.0.1:<free port>; each page (default: every
.html of the book) is loaded at a laptop's viewport (1280×900), MathJax is awaited, and the page fails on:
- a request to any host but 127.0.0.1 (the book must open offline; Chromium is kept from reaching any other host),
  or a request to the book itself that failed (a missing file, HTTP 4xx/5xx);
- raw LaTeX left in the text of the main column (`\\(`, `\\[`, `$$`, `\\begin{`, a TeX command such as `\\sigma`, or
  `$x$`; code excepted) or a MathJax error;
- `#|` (an nbdev directive) anywhere in the page's text, folded code included;
- an image that did not load;
- a main column that scrolls horizontally, or a page that does (a wide table in its own scroll box is fine).
A screenshot of each page, as it first shows, is saved as SCREENSHOTS/<page>.png (the full page, at most 16,000 px tall).

Prints one line per failure (`PAGE: problem`) and a summary line; exits with 1 on any failure, 2 when it cannot
run (no book, no Chromium). Needs Debian's `chromium` and `chromium-driver` (tools/setup.sh installs them where it
can) and selenium (the `dev` extra); the system's chromedriver is used, nothing is downloaded.
"""
import argparse, base64, functools, http.server, json, os, shutil, subprocess, sys, threading, time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "nbs" / "_build" / "html"
SCREENSHOTS = ROOT / "nbs" / "_build" / "screenshots"
VIEWPORT = (1280, 900)
MAX_SHOT_HEIGHT = 16_000      # px: a longer page is cut there (a screenshot stays a few MB)
HOST = "127.0.0.1"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}
IGNORED_404 = {"/favicon.ico"}  # Chromium asks for it on every site; the book has none

@dataclass
class Failure:
    page: str
    problem: str
    def __str__(self): return f"{self.page}: {self.problem}"

# ---- the book, served locally

def pages(html: Path) -> list[str]:
    "Every page of the built book at `html`, as paths relative to it (Sphinx's own folders left out)."
    return sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                  if not SKIP_DIRS & set(p.relative_to(html).parts[:-1]))

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

@contextmanager
def serve(folder: Path):
    "Serve `folder` over http://127.0.0.1:<free port> from a thread; yields the base URL."
    server = http.server.ThreadingHTTPServer((HOST, 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try: yield f"http://{HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown(); server.server_close()

# ---- the browser

def find_browser() -> tuple[str, str]:
    "Paths of Chromium and its chromedriver, or a SystemExit that says what to install."
    browser = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVERS)), None)
    if not (browser and driver):
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p)
        raise SystemExit(f"check_book: {missing} not found; install Debian's chromium and chromium-driver "
                         "(apt-get install chromium chromium-driver, or run tools/setup.sh as root)")
    try: import selenium  # noqa: F401
    except ImportError: raise SystemExit("check_book: selenium not installed; run tools/setup.sh (the dev extra)")
    return browser, driver

@contextmanager
def browser_session():
    "Headless Chromium driven by the system's chromedriver (never Selenium Manager), that reaches no host but loopback."
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    browser, driver_path = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                "--disable-quic", "--hide-scrollbars", "--force-device-scale-factor=1", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                # another host is never reached: no name resolves, and what is not loopback goes to a closed proxy port
                f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}", "--proxy-server=http://127.0.0.1:9"]:
        opts.add_argument(arg)
    if hasattr(os, "geteuid") and os.geteuid() == 0: opts.add_argument("--no-sandbox")  # Chromium refuses root otherwise
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    try: drv = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    except WebDriverException as e:
        raise SystemExit(f"check_book: {browser} did not start through {driver_path}: {str(e.msg or e).splitlines()[0]}")
    try:
        drv.set_page_load_timeout(120); drv.set_script_timeout(120)
        drv.execute_cdp_cmd("Network.enable", {})
        drv.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})  # every page asks for all it needs
        _metrics(drv, VIEWPORT[1])
        yield drv
    finally: drv.quit()

# ---- what is checked in the page (JavaScript run by Chromium)

# Waits for MathJax's first typesetting and for every image (lazy ones made eager) to load or fail.
WAIT_JS = r"""
const done = arguments[arguments.length - 1], t0 = Date.now(), sleep = ms => new Promise(r => setTimeout(r, ms));
(async () => {
  let mathjax = 'none';
  if (document.querySelector('script[src*="mathjax" i]')) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - t0 < 30000) await sleep(50);
    if (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) mathjax = 'MathJax did not start within 30 s';
    else try { await MathJax.startup.promise; mathjax = 'ok'; } catch (e) { mathjax = 'MathJax failed: ' + e; }
  }
  const imgs = [...document.images];
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.race([sleep(30000), Promise.all(imgs.map(i => i.complete ? null :
    new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })))]);
  await document.fonts.ready;
  done({mathjax, height: Math.ceil(document.documentElement.scrollHeight)});
})();
"""

# Opens every fold, then reports what a reader would see wrong.
INSPECT_JS = r"""
const [latexPatterns, directive] = arguments, latexRes = latexPatterns.map(p => new RegExp(p));
document.querySelectorAll('details').forEach(d => d.open = true);
document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
const article = document.querySelector('.bd-article') || document.querySelector('main') || document.body;
const visible = el => el && (el.checkVisibility ? el.checkVisibility({visibilityProperty: true}) : el.offsetParent !== null);
function texts(root, skip) {  // [text of each visible text node under root, outside `skip`]
  const out = [], walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n; (n = walk.nextNode());) {
    const p = n.parentElement;
    if (!n.data.trim() || !p || p.closest('script, style, noscript, template' + (skip ? ', ' + skip : ''))) continue;
    if (visible(p)) out.push(n.data);
  }
  return out;
}
const snippet = (s, i) => s.slice(Math.max(0, i - 30), i + 50).replace(/\s+/g, ' ').trim();
const latex = [];
for (const t of texts(article, 'pre, code, kbd, samp, .highlight, mjx-container, .MathJax, textarea')) {
  const m = latexRes.map(re => re.exec(t)).find(Boolean);  // one report per run of text
  if (m) latex.push(snippet(t, m.index));
}
const directives = texts(document.body, null).filter(t => t.includes(directive)).map(t => snippet(t, t.indexOf(directive)));
const mathErrors = [...document.querySelectorAll('mjx-merror')].map(e => (e.getAttribute('data-mjx-error') || e.textContent).trim());
const images = [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
  .map(i => i.getAttribute('src') || i.currentSrc || '(no src)');
const scroller = document.scrollingElement, ar = article.getBoundingClientRect();
const overflow = {page: scroller.scrollWidth > scroller.clientWidth + 1 ? [scroller.scrollWidth, scroller.clientWidth] : null,
                  article: article.scrollWidth > article.clientWidth + 1 ? [article.scrollWidth, article.clientWidth] : null,
                  culprits: []};
if (overflow.page || overflow.article) {  // the outermost elements that stick out of the column, for the report
  const right = overflow.article ? ar.right : scroller.clientWidth;
  for (const el of (overflow.article ? article : document.body).querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.right <= right + 1) continue;
    const p = el.parentElement;
    if (p && p !== article && p.getBoundingClientRect().right > right + 1) continue;
    const name = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + [...el.classList].slice(0, 2).map(c => '.' + c).join('');
    overflow.culprits.push(`${name} (${Math.round(r.width)} px wide, ${Math.round(r.right - right)} px past the edge)`);
    if (overflow.culprits.length >= 3) break;
  }
}
return {latex, directives, mathErrors, images, overflow};
"""

# Raw LaTeX, as JavaScript regular expressions: math delimiters, environments, TeX commands (`\\sigma`, `\\frac`) and
# `$...$` (a dollar followed and closed by a non-space, as Pandoc reads it: "$5 and $10" is not math).
LATEX = [r"\\\(", r"\\\[", r"\$\$", r"\\begin\{", r"\\[a-zA-Z]{2,}", r"\$[^$\s](?:[^$]*[^$\s])?\$"]
DIRECTIVE = "#|"

def _requests(drv, base: str) -> tuple[list[str], list[str]]:
    "(URLs asked of another host, book URLs that failed) since the last call, from Chromium's performance log."
    sent, failed, status = {}, [], {}
    for entry in drv.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Network.requestWillBeSent": sent[p["requestId"]] = p["request"]["url"]
        elif method == "Network.webSocketCreated": sent[p["requestId"]] = p["url"]
        elif method == "Network.responseReceived": status[p["requestId"]] = (p["response"]["url"], p["response"]["status"])
        elif method == "Network.loadingFailed" and not p.get("canceled"): failed.append((p["requestId"], p.get("errorText", "")))
    external = [u for u in dict.fromkeys(sent.values())
                if urlsplit(u).scheme not in ("data", "blob", "about", "chrome", "chrome-extension", "devtools")
                and urlsplit(u).hostname != HOST]
    bad = [f"{url} (HTTP {code})" for url, code in status.values()
           if code >= 400 and url.startswith(base) and urlsplit(url).path not in IGNORED_404]
    bad += [f"{sent[rid]} ({err})" for rid, err in failed if sent.get(rid, "").startswith(base)]
    return external, list(dict.fromkeys(bad))

def check_page(drv, base: str, page: str, screenshots: Path | None = None) -> list[Failure]:
    "Load `page` (relative to `base`), check it, save its screenshot; the problems found."
    drv.get_log("performance")  # forget what earlier pages asked for
    fails = []
    try: drv.get(base + page)
    except Exception as e: return [Failure(page, f"did not load: {type(e).__name__}: {str(e).splitlines()[0]}")]
    try:
        ready = drv.execute_async_script(WAIT_JS)
        if ready["mathjax"] not in ("ok", "none"): fails.append(Failure(page, ready["mathjax"]))
        if screenshots is not None: _screenshot(drv, screenshots / (Path(page).with_suffix(".png")), ready["height"])
        found = drv.execute_script(INSPECT_JS, LATEX, DIRECTIVE)
    except Exception as e: return [Failure(page, f"could not be checked: {type(e).__name__}: {str(e).splitlines()[0]}")]
    external, broken = _requests(drv, base)
    fails += [Failure(page, f"request to another host: {u}") for u in external]
    fails += [Failure(page, f"request failed: {u}") for u in broken]
    fails += [Failure(page, f"image did not load: {src}") for src in found["images"]]
    fails += [Failure(page, f"raw LaTeX in the text: …{s}…") for s in dict.fromkeys(found["latex"])]
    fails += [Failure(page, f"MathJax error: {s}") for s in dict.fromkeys(found["mathErrors"])]
    fails += [Failure(page, f"`{DIRECTIVE}` visible: …{s}…") for s in dict.fromkeys(found["directives"])]
    o = found["overflow"]
    if o["article"] or o["page"]:
        what, (wide, room) = ("the main column", o["article"]) if o["article"] else ("the page", o["page"])
        also = ", and so does the page" if o["article"] and o["page"] else ""
        fails.append(Failure(page, f"{what} scrolls horizontally ({wide} px of content in {room} px{also})"
                                   + (": " + "; ".join(o["culprits"]) if o["culprits"] else "")))
    return fails

def _metrics(drv, height: int):
    drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                        {"width": VIEWPORT[0], "height": height, "deviceScaleFactor": 1, "mobile": False})
    drv.execute_async_script("const done = arguments[0]; requestAnimationFrame(() => requestAnimationFrame(done))")

def _screenshot(drv, path: Path, height: int):
    "The whole page as a PNG: the viewport made as tall as the page (up to MAX_SHOT_HEIGHT) for the shot, then restored."
    _metrics(drv, max(VIEWPORT[1], min(height, MAX_SHOT_HEIGHT)))
    try: shot = drv.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally: _metrics(drv, VIEWPORT[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(base64.b64decode(shot["data"]))
    os.replace(tmp, path)

def check_book(html: Path = HTML, only: list[str] | None = None, screenshots: Path | None = SCREENSHOTS,
               echo=print) -> list[Failure]:
    "Check the pages `only` (default: all) of the book built at `html`; echo each failure as it is found."
    if not (html / "index.html").is_file() and not only:
        raise SystemExit(f"check_book: {html}/index.html not found; build the book first (jupyter-book build nbs, or --build)")
    todo = only or pages(html)
    if screenshots is not None and not only: shutil.rmtree(screenshots, ignore_errors=True)
    fails = []
    with serve(html) as base, browser_session() as drv:
        for page in todo:
            for f in check_page(drv, base, page, screenshots):
                fails.append(f); echo(str(f))
    return fails

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="*", help="pages to check, relative to --html (default: every page)")
    p.add_argument("--html", type=Path, default=HTML, help="the built book (default: nbs/_build/html)")
    p.add_argument("--screenshots", type=Path, default=SCREENSHOTS, help="where the screenshots go (default: nbs/_build/screenshots)")
    p.add_argument("--no-screenshots", action="store_true", help="take none")
    p.add_argument("--build", action="store_true", help="build the book first (jupyter-book build nbs)")
    args = p.parse_args(argv)
    if args.build:
        subprocess.run(["bash", str(ROOT / "tools" / "fetch_mathjax.sh")], check=True)
        jb = Path(sys.executable).with_name("jupyter-book")
        subprocess.run([str(jb) if jb.exists() else "jupyter-book", "build", str(ROOT / "nbs"), "--quiet"], check=True)
    t0 = time.perf_counter()
    try: fails = check_book(args.html, args.pages or None, None if args.no_screenshots else args.screenshots)
    except SystemExit as e:
        print(e, file=sys.stderr); return 2
    n = len(args.pages or pages(args.html))
    bad = len({f.page for f in fails})
    shots = "" if args.no_screenshots else f"; screenshots in {args.screenshots}"
    print(f"check_book: {n} pages, {n - bad} clean, {len(fails)} problem(s) on {bad} page(s) "
          f"in {time.perf_counter() - t0:.0f} s{shots}")
    return 1 if fails else 0

if __name__ == "__main__":
    sys.exit(main())

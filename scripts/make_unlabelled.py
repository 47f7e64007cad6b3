"""The unlabelled posts a teacher labels for distillation (issue 31): real posts of this
repository's fixtures that no evaluation set holds. Output: fixtures/teacher/unlabelled.jsonl,
one `{"id", "source", "text"}` a line (committed; see fixtures/teacher/SOURCE.md).

    python3 scripts/make_unlabelled.py

- `twitter-v2`: every English tweet (`lang == "en"`) of the X API v2 payloads in
  fixtures/twitter-v2/ (`data` and `includes.tweets`), texts deduplicated.
- `bluesky`, `mastodon`: English posts of the recordings whose id the out-of-domain set does not
  hold (almost all are in it: the few left are kept).
- Never JWST: every usable JWST row is in the out-of-domain set, and the rest are its exact or
  cut copies — as unlabelled training posts they would leak into that evaluation.
No TweetEval text: its test pool is the held-out set's source, its validation set validates.
`flagship teacher-labels --holdout` checks the texts against the evaluation sets once more.
"""
import html
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
FX = ROOT / "fixtures"
OUT = FX / "teacher" / "unlabelled.jsonl"


def strip_html(s):
    s = re.sub(r"<br\s*/?>", "\n", s)
    s = re.sub(r"</p>\s*<p>", "\n\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    return html.unescape(s).strip()


def main():
    ood = {json.loads(line)["id"] for line in open(FX / "out-of-domain" / "labelled.jsonl")}
    rows, seen = [], set()

    def add(id_, source, text):
        text = (text or "").strip()
        if text and text not in seen and id_ not in ood:
            seen.add(text)
            rows.append({"id": id_, "source": source, "text": text})

    for f in sorted((FX / "twitter-v2").glob("*.jsonl")):
        for line in open(f):
            try:
                page = json.loads(line)
            except json.JSONDecodeError:
                continue  # the stream file's last line is cut (a real broken stream)
            data = page.get("data") or []
            tweets = (data if isinstance(data, list) else [data]) + \
                page.get("includes", {}).get("tweets", [])
            for t in tweets:
                if t.get("lang") == "en":
                    add(f"twitter-v2:{t['id']}", "twitter-v2", t.get("text"))
    for line in open(FX / "bluesky-jetstream" / "capture_v1.jsonl"):
        e = json.loads(line)
        c = e.get("commit") or {}
        r = c.get("record") or {}
        if (c.get("operation") == "create" and c.get("collection") == "app.bsky.feed.post"
                and "en" in (r.get("langs") or [])):
            add(f"bluesky:{e['did']}/{c['rkey']}", "bluesky", r.get("text"))
    for line in open(FX / "mastodon" / "public_timeline_statuses.jsonl"):
        s = json.loads(line)["status"]
        if s.get("language") == "en":
            add(f"mastodon:{s['id']}", "mastodon", strip_html(s.get("content", "")))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    by = {}
    for r in rows:
        by[r["source"]] = by.get(r["source"], 0) + 1
    print(f"{OUT.relative_to(ROOT)}: {len(rows)} posts {by}")


if __name__ == "__main__":
    main()

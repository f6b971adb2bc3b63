"""Readers of a rendered report page: what a reader sees outside the "not usable" folds."""

from __future__ import annotations

import re


def text_outside_not_usable_folds(html: str) -> str:
    """The page's text with every ``<details class='not-usable'>`` fold (and what it holds) removed."""
    from html.parser import HTMLParser

    class Outside(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.fold_at, self.parts = 0, None, []

        def handle_starttag(self, tag, attrs):
            if tag == "details":
                self.depth += 1
                if self.fold_at is None and "not-usable" in (dict(attrs).get("class") or ""):
                    self.fold_at = self.depth

        def handle_endtag(self, tag):
            if tag == "details":
                if self.fold_at == self.depth:
                    self.fold_at = None
                self.depth -= 1

        def handle_data(self, data):
            if self.fold_at is None:
                self.parts.append(data)

    parser = Outside()
    parser.feed(html)
    return " ".join(parser.parts)


def html_outside_not_usable_folds(html: str) -> str:
    """The page's markup with every ``<details class='not-usable'>`` fold (and what it holds) cut out."""
    out, depth, fold_at = [], 0, None
    for token in re.split(r"(<details[^>]*>|</details>)", html):
        if token.startswith("<details"):
            depth += 1
            if fold_at is None and "not-usable" in token:
                fold_at = depth
        elif token == "</details>":
            if fold_at == depth:
                fold_at = None
                depth -= 1
                continue
            depth -= 1
        if fold_at is None:
            out.append(token)
    return "".join(out)

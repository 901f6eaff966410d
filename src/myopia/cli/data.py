"""myopia data: build and inspect token caches."""

from __future__ import annotations

import json

from .common import add_data_args, data_options


def register(sub) -> None:
    """Add the ``myopia data`` parser (actions build and info) to ``sub``."""
    p = sub.add_parser("data", help="build or inspect a token cache",
                       description="Tokenize a corpus once into a memory-mapped token cache (reused while the "
                       "source, tokenizer and split settings are unchanged), or show what a cache holds.")
    s = p.add_subparsers(dest="data_command", metavar="ACTION", required=True, help="build or info")
    b = s.add_parser("build", help="tokenize a corpus into a cache folder")
    add_data_args(b)
    b.add_argument("--out", required=True, help="cache folder")
    b.add_argument("--force", action="store_true", help="rebuild even when the cache is up to date")
    b.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    b.set_defaults(func=run_build)
    i = s.add_parser("info", help="show a cache's source, tokenizer, splits and slices")
    i.add_argument("cache", help="cache folder")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=run_info)


def run_build(args) -> int:
    """Run ``myopia data build``: tokenize --data into the cache folder --out; returns the exit status."""
    from ..data.cache import build_cache
    from ..data.sources import DataSource

    opts = data_options(args)
    source = DataSource.from_spec(args.data, **{k: opts[k] for k in ("text_field", "label_field", "hf_config",
                                                                     "hf_split", "documents")})
    corpus = build_cache(source, args.tokenizer or "bytes", args.out, val_frac=args.val_frac,
                         test_frac=args.test_frac, split_seed=args.split_seed, progress=not args.no_progress,
                         force=args.force)
    d = corpus.describe()
    print(f"{args.out}: {corpus.n_docs:,} documents, {int(corpus.doc_offsets[-1]):,} tokens, vocabulary "
          f"{corpus.vocab_size} (train/val/test documents {d['documents']['train']}/{d['documents']['val']}/"
          f"{d['documents']['test']})")
    return 0


def run_info(args) -> int:
    """Run ``myopia data info``: print documents and tokens per split and slice; returns the exit status."""
    from ..data.cache import cache_info, is_cache
    from ..errors import MyopiaError

    if not is_cache(args.cache):
        raise MyopiaError(f"{args.cache} is not a token cache (no cache.json)")
    info = cache_info(args.cache)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    tok = info["tokenizer"]
    print(f"cache      {info['cache']}")
    print(f"source     {info['source']['kind']} {info['source']['location']} (fingerprint "
          f"{info['source']['fingerprint']})")
    print(f"tokenizer  {tok['kind']} vocab {tok['vocab_size']} (fingerprint {tok['fingerprint']})")
    print(f"split      seed {info['split']['split_seed']}, val {info['split']['val_frac']}, "
          f"test {info['split']['test_frac']}")
    for s in ("train", "val", "test"):
        print(f"  {s:<6} {info['documents'][s]:>8,} documents {info['tokens'][s]:>14,} tokens")
    print("slices")
    for name, c in info["slices"].items():
        print(f"  {name or '(none)':<24} {c['documents']:>8,} documents {c['tokens']:>14,} tokens")
    return 0

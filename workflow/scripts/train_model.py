"""Rule train_model: train one grid point on the train tokens (lmscaling.train)."""

import csv
from dataclasses import asdict

from lmscaling import tokenizer, tracking
from lmscaling.config import token_budget
from lmscaling.io import atomic_path, write_json
from lmscaling.jobs import configure_logging, guard
from lmscaling.model import GPTConfig, count_parameters, save_checkpoint
from lmscaling.train import TrainConfig, train

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
with guard(smk.rule):
    shape, opts = smk.params.shape, smk.params.train
    vocab_size = tokenizer.load_tokenizer(smk.input.tokenizer).get_vocab_size()
    model_cfg = GPTConfig(
        vocab_size=vocab_size,
        context_length=smk.params.context_length,
        n_layer=shape.n_layer,
        d_model=shape.d_model,
        n_head=shape.n_head,
    )
    counts = count_parameters(model_cfg)
    train_cfg = TrainConfig(
        tokens=token_budget(opts, counts["N"]),
        batch_size=opts["batch_size"],
        lr=opts["lr"],
        min_lr_ratio=opts["min_lr_ratio"],
        warmup_fraction=opts["warmup_fraction"],
        weight_decay=opts["weight_decay"],
        grad_clip=opts["grad_clip"],
        seed=smk.params.seed,
        log_every=opts["log_every"],
        threads=smk.threads,
        device=opts["device"],
    )
    tokens, totals = tokenizer.read_token_shards(smk.input.tokens)
    w = smk.wildcards
    tags = tracking.job_tags(smk.rule, dict(w), smk.resources.attempt, smk.config)
    params = {"model": asdict(model_cfg), "train": asdict(train_cfg), **counts}
    params["model_id"], params["tokenizer"] = w.model, w.tokenizer
    with tracking.child_run(
        smk.params.parent, f"train/{w.tokenizer}/{w.model}", tags, params
    ) as run:
        model, summary, rows = train(
            model_cfg,
            train_cfg,
            tokens,
            on_log=lambda step, row: run.log_metrics(row, step=step),
            name=w.model,
        )
        summary.update(
            model_id=w.model,
            tokenizer=w.tokenizer,
            model=asdict(model_cfg),
            train=asdict(train_cfg),
            train_tokens_available=totals["tokens"],
            epochs=summary["D"] / totals["tokens"],
        )
        save_checkpoint(smk.output.checkpoint, model, extra={"summary": summary})
        with atomic_path(smk.output.metrics) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_json(smk.output.summary, summary)
        run.log_metrics(
            {k: summary[k] for k in ("N", "N_total", "N_embedding", "D", "C", "train_loss")}
        )
        run.log_artifact(smk.output.summary)
        run.log_artifact(smk.output.metrics)

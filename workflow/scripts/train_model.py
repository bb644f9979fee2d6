"""Rule train_model: train one grid point on the train tokens (lmscaling.train).

Resumable: the run's state lives in ``params.state_dir`` (not a declared output, so Snakemake
keeps it when a job fails); a rerun continues from its last resume file. The fraction
checkpoints are staged there and copied to their declared paths at the end, then the state
directory is removed. The job claims its GPUs first (lmscaling.gpus: its own free GPUs on a
workstation; the allocation's under SLURM). With more than one GPU (``resources.gpu``, the GPUs
of the whole job) the training runs under torchrun, on ``resources.nodes`` nodes
(lmscaling.distributed).
"""

import csv
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

from lmscaling import tokenizer, tracking
from lmscaling.config import checkpoint_name
from lmscaling.distributed import world_layout
from lmscaling.gpus import claim_gpus
from lmscaling.io import atomic_path, read_json, write_json
from lmscaling.jobs import configure_logging, guard
from lmscaling.model import GPTConfig, count_parameters, flops_per_token, save_checkpoint
from lmscaling.train import (
    TrainConfig,
    clear_state,
    load_token_groups,
    mixture_report,
    resolve_precision,
    select_device,
    token_groups,
    train,
)

smk = snakemake  # noqa: F821 (injected by Snakemake)
configure_logging(smk.log[0])
log = logging.getLogger("lmscaling.train_model")
gpus = int(getattr(smk.resources, "gpu", 0) or 0)
nodes = int(getattr(smk.resources, "nodes", 1) or 1)
# Claimed before anything touches CUDA, so that cuda:0 is this job's first GPU.
with guard(smk.rule), claim_gpus(gpus if nodes == 1 else 0, smk.params.gpu_locks):
    shape, opts, models = smk.params.shape, smk.params.train, smk.params.models
    mixture = smk.params.mixture  # {training corpus: sampling probability}
    vocab_size = tokenizer.load_tokenizer(smk.input.tokenizer).get_vocab_size()
    model_cfg = GPTConfig(
        vocab_size=vocab_size,
        context_length=models["context_length"],
        n_layer=shape.n_layer,
        d_model=shape.d_model,
        n_head=shape.n_head,
        mlp_ratio=models["mlp_ratio"],
        tie_embeddings=models["tie_embeddings"],
        norm=models["norm"],
        position=models["position"],
    )
    counts = count_parameters(model_cfg)
    rules = smk.params.settings  # tokens, lr, batch_size (config.train_settings)
    train_cfg = TrainConfig(
        tokens=rules["tokens"],
        batch_size=rules["batch_size"],
        micro_batch_size=opts["micro_batch_size"],
        lr=rules["lr"],
        min_lr_ratio=opts["min_lr_ratio"],
        schedule=opts["schedule"],
        warmup_fraction=opts["warmup_fraction"],
        decay_fraction=opts["decay_fraction"],
        weight_decay=opts["weight_decay"],
        beta1=opts["beta1"],
        beta2=opts["beta2"],
        grad_clip=opts["grad_clip"],
        seed=smk.params.seed,
        log_every=opts["log_every"],
        threads=smk.threads,
        device=opts["device"],
        precision=opts["precision"],
        compile=opts["compile"],
        resume_every=smk.config["train"]["resume_every"],
        checkpoint_fractions=tuple(opts["checkpoint_fractions"]),
        # several training corpora: sampled by their weights, not by their sizes
        mixture=tuple(mixture.values()) if len(mixture) > 1 else (),
    )
    state_dir = Path(smk.params.state_dir)
    files = [(p, read_json(Path(p).with_suffix(".json"))["dtype"]) for p in smk.input.tokens]
    groups_files = token_groups(files, list(mixture))  # one group, or one per corpus
    groups = load_token_groups(groups_files)
    shards = groups if train_cfg.mixture else groups[0]
    # per corpus: probability, tokens, epochs; stops here naming a corpus too short to train on
    T = model_cfg.context_length
    d = train_cfg.steps(T) * train_cfg.batch_size * T  # D: whole optimizer steps
    probs = train_cfg.mixture or (1.0,)
    report = mixture_report(groups, list(mixture), probs, T + 1, d)
    available = sum(r["tokens"] for r in report.values())  # in shards long enough to sample
    nnodes, nproc = world_layout(gpus, nodes)
    device = select_device(opts["device"])
    if device.type != "cuda":
        if nnodes * nproc > 1:
            log.warning(
                "%s: %d GPUs asked for (train.gpus), but no CUDA device is visible: "
                "training in one process on the CPU",
                smk.wildcards.model,
                gpus,
            )
        nnodes, nproc = 1, 1  # no GPU: one process on the CPU

    w = smk.wildcards
    tags = tracking.job_tags(smk.rule, dict(w), smk.resources.attempt, smk.config)
    params = {"model": asdict(model_cfg), "train": asdict(train_cfg), **counts}
    params.update(model_id=w.model, tokenizer=w.tokenizer, world_size=nnodes * nproc)
    params["flops_per_token"] = flops_per_token(model_cfg)
    params["precision"] = resolve_precision(train_cfg.precision, device)  # auto, as resolved
    log.info("%s: %s, FLOP/token %s", w.model, counts, params["flops_per_token"])
    with tracking.child_run(
        smk.params.parent, f"train/{w.tokenizer}/{w.model}", tags, params
    ) as run:
        if nnodes * nproc > 1:
            from lmscaling.distributed import FINAL_FILE, launch, write_spec
            from lmscaling.model import load_checkpoint

            spec = state_dir / "job.json"
            write_spec(spec, asdict(model_cfg), asdict(train_cfg), groups_files, state_dir, w.model)
            launch(nproc, spec, nnodes=nnodes)
            model, extra = load_checkpoint(state_dir / FINAL_FILE)
            summary, rows = extra["summary"], extra["metrics"]
            run.log_metric_history(rows)
        else:
            model, summary, rows = train(
                model_cfg,
                train_cfg,
                shards,
                on_log=lambda step, row: run.log_metrics(
                    {k: v for k, v in row.items() if v is not None}, step=step
                ),
                name=w.model,
                state_dir=state_dir,
            )
        for fraction, out in zip(opts["checkpoint_fractions"], smk.output.fractions, strict=True):
            staged = summary["checkpoints"][checkpoint_name(fraction)]
            with atomic_path(out) as tmp:  # a copy: the staged file stays until clear_state
                shutil.copyfile(staged["path"], tmp)
            staged["path"] = out
        summary.update(
            model_id=w.model,
            tokenizer=w.tokenizer,
            model=asdict(model_cfg),
            train=asdict(train_cfg),
            compute_budget=shape.compute,
            train_tokens_available=available,
            epochs=summary["D"] / available,
            # per corpus: its share of the windows, its tokens and the epochs over it
            mixture=report,
        )
        save_checkpoint(smk.output.checkpoint, model, extra={"summary": summary})
        with atomic_path(smk.output.metrics) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_json(smk.output.summary, summary)
        clear_state(state_dir)  # outputs complete: the resume file is no longer needed
        run.log_metrics(
            {
                k: summary[k]
                for k in ("N", "N_total", "N_embedding", "N_total_untied", "D", "C", "train_loss")
            }
        )
        run.log_artifact(smk.output.summary)
        run.log_artifact(smk.output.metrics)
        run.log_dataset(smk.input.tokens, name=f"{w.tokenizer}/train")  # content digest
        run.log_model(smk.output.checkpoint)  # only when config mlflow.log_models is true

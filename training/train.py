"""Train a PoseResNet on COCO-format keypoints: ``heatpose train`` or ``python -m training.train``
(one process), ``torchrun --nproc_per_node=N -m training.train`` (DDP; NCCL on CUDA, gloo on CPU).

Flags (:mod:`heatpose_cli.train`) follow torchvision's references; defaults are the published
SimpleBaselines/mmpose COCO recipe (ResNet-50 256x192, Adam 5e-4, 500 warm-up iterations, x0.1
at epochs 170 and 200 of 210, 64 images a process on 8 GPUs = 512). Files in ``--output-dir``:
``resume.pt`` (every epoch, atomic), ``last.safetensors`` and ``best.safetensors`` (our model
artifact with the training metrics in its config), ``metrics.jsonl``, TensorBoard scalars under
``tb/``. Epochs are numbered from 1 everywhere (progress bar, logs, file names); at the end rank
0 prints where each checkpoint is and the command that serves the best one.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from models.pose.codec import HeatmapCodec
from models.pose.network import PoseResNet, PretrainedWeightsError
from models.weights.checkpoint import CheckpointError, load, save
from models.weights.model_config import ModelConfig
from training.data.coco import CocoKeypoints, DataError, single_threaded_opencv, worker_init
from training.data.data_checks import check_training_data
from training.data.keypoint_spec import spec_for_training
from training.data.transforms import AugmentParams, TopDownTransform
from training.loop.distributed import DistInfo, barrier, cleanup, convert_sync_batchnorm
from training.loop.distributed import init_distributed as init_dist
from training.loop.engine import (
    KeypointMSELoss,
    StepRecord,
    WarmupMultiStep,
    evaluate_model,
    train_one_epoch,
)
from training.loop.init_from import adopt_input_convention, copy_weights, load_source
from training.loop.resume import (
    RESUME_FILE,
    ResumeError,
    keep_copy,
    load_resume,
    restore_model,
    restore_training,
    rng_state,
    save_resume,
)
from training.loop.run_log import RunLog, checkpoint_summary, weights_digest


def build_config(args: Any) -> ModelConfig:
    """The model's config from the flags: architecture, codec (heatmaps at stride 4), RGB."""
    w, h = args.input_size
    codec = HeatmapCodec.for_input((w, h), sigma=args.sigma)
    return ModelConfig(
        name=args.name or f"res{args.depth}-{h}x{w}",
        depth=args.depth,
        codec_params=codec.to_dict(),
        decode_mode=args.decode_mode,
        provenance={
            "trainer": "heatpose training.train",
            "data_path": str(args.data_path),
            "train_split": args.train_split,
            "val_split": args.val_split,
        },
    )


def make_loader(args: Any, config: ModelConfig, info: DistInfo) -> tuple[CocoKeypoints, Any]:
    params = AugmentParams(
        flip_prob=args.flip_prob,
        half_body_prob=args.half_body_prob,
        shift_factor=args.shift_factor,
        scale_range=tuple(args.scale_range),
        rotate_factor=args.rotate_factor,
        photometric=args.photometric,
    )
    transform = TopDownTransform(config.codec, config.spec, params)
    dataset = CocoKeypoints(
        args.data_path, args.train_split, transform, seed=args.seed, repeat=args.repeat_dataset
    )
    sampler: DistributedSampler = DistributedSampler(
        dataset, info.world_size, info.rank, shuffle=True, seed=args.seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        pin_memory=info.device.type == "cuda",
        drop_last=True,
        worker_init_fn=worker_init,
        persistent_workers=False,
    )
    if len(loader) == 0:
        raise DataError(
            f"{len(dataset)} training persons split over {info.world_size} process(es) give no "
            f"full batch of {args.batch_size}; lower --batch-size"
        )
    return dataset, loader


def _quiet(_: str) -> None:
    """Other ranks than 0 say nothing."""


def train(args: Any, info: DistInfo) -> dict[str, Any]:
    """The training run the flags describe; returns the last metrics (rank 0)."""
    # Before any model is built, one line each: the annotations' keypoints fit their category
    # (the spec comes from the data's category), then every image the run needs exists.
    spec = spec_for_training(args, say=print if info.is_main else _quiet)
    check_training_data(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    config = replace(build_config(args), spec=spec)
    # --init-from: the source model's input convention.
    source = load_source(args.init_from) if args.init_from else None
    if source is not None:
        config = adopt_input_convention(config, source, args.init_from)
    out = Path(args.output_dir)
    model: torch.nn.Module = PoseResNet(
        args.depth, config.spec.num_keypoints, pretrained_backbone=args.pretrained_backbone
    )
    if args.weights:
        model.load_state_dict(load(args.weights).model.state_dict())
    if source is not None:
        copy_weights(model, config, source, say=print if info.is_main else _quiet)
    if args.sync_bn and info.distributed:
        model = convert_sync_batchnorm(model, info.device)
    # channels_last everywhere, as models.inference.predictor runs it (evaluation uses that code).
    model = model.to(info.device).to(memory_format=torch.channels_last)
    bare = model

    def evaluate_now(results: Path | None = None) -> dict[str, float]:
        return evaluate_model(
            bare,
            config,
            data_path=args.data_path,
            split=args.val_split,
            device=info.device,
            flip_test=not args.no_flip_test,
            batch_size=args.batch_size,
            workers=args.workers,
            results_path=results,
            verbose=True,
        )

    if args.test_only:
        if args.resume:
            restore_model(bare, load_resume(args.resume), args.resume)
        stats = evaluate_now(out / "results.json") if info.is_main else {}
        barrier(info)
        return stats

    dataset, loader = make_loader(args, config, info)
    if info.distributed:
        ids = [info.local_rank] if info.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    optimizer = torch.optim.Adam(bare.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    iters = len(loader)
    schedule = WarmupMultiStep(
        warmup_iters=args.warmup_iters,
        warmup_factor=args.warmup_factor,
        milestones=[e * iters for e in args.lr_steps],
        gamma=args.lr_gamma,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    amp_dtype, scaler = None, None
    if args.amp and info.device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    start_epoch, step, best_ap = 0, 0, -1.0
    if args.resume:
        start_epoch, step, best_ap = restore_training(
            load_resume(args.resume),
            args.resume,
            model=bare,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
        )
    resumed = {"from": str(args.resume), "epoch": start_epoch + 1, "step": step}
    log = RunLog(out, info, trace_dir=args.trace_steps, resumed=resumed if args.resume else None)
    log.event(
        "start",
        epoch=start_epoch + 1,  # the first epoch this run trains
        step=step,
        lr=optimizer.param_groups[0]["lr"],
        world_size=info.world_size,
        iters_per_epoch=iters,
    )

    def on_log(rec: StepRecord) -> None:
        log.train_step(rec, weights_digest(bare) if args.trace_steps else None)

    metrics: dict[str, Any] = {}
    for index in range(start_epoch, args.epochs):  # index 0-based (sampler seeds)
        epoch = index + 1  # what the bar, the logs and the file names show
        t0 = time.perf_counter()
        dataset.set_epoch(index)
        loader.sampler.set_epoch(index)
        step, loss = train_one_epoch(
            model,
            loader,
            loss_fn=KeypointMSELoss(),
            optimizer=optimizer,
            scheduler=scheduler,
            config=config,
            info=info,
            epoch=epoch,
            epochs=args.epochs,
            step=step,
            scaler=scaler,
            amp_dtype=amp_dtype,
            log_every=args.print_freq,
            on_log=on_log,
            sync_loss_every_step=bool(args.trace_steps),
            progress=not args.no_progress,
        )
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": loss,
            "lr": optimizer.param_groups[0]["lr"],
        }
        log.event("epoch", time_s=round(time.perf_counter() - t0, 2), **metrics)
        do_eval = args.eval_every > 0 and (epoch % args.eval_every == 0 or epoch == args.epochs)
        if info.is_main:
            if do_eval:
                stats = evaluate_now(out / f"results_epoch{epoch}.json")
                metrics.update({f"val_{k}": v for k, v in stats.items()})
                log.event("eval", epoch=epoch, step=step, **stats)
            ap = metrics.get("val_AP", -1.0)
            export_cfg = replace(config, metrics=metrics)
            save(out / "last.safetensors", bare, export_cfg)
            if do_eval and ap > best_ap:
                best_ap = ap
                save(out / "best.safetensors", bare, export_cfg)
            resume_state = {
                "model": bare.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch,  # epochs done
                "step": step,
                "best_ap": best_ap,
                "rng": rng_state(),
                "args": {k: str(v) for k, v in vars(args).items()},
            }
            save_resume(out / RESUME_FILE, resume_state)
            if args.keep_resume:
                keep_copy(out / RESUME_FILE, out / f"resume_epoch{epoch}.pt")
        barrier(info)
    log.close()
    return metrics


def run(args: Any) -> int:
    """Train as the parsed flags say (:func:`heatpose_cli.train.parse_args`); exit status
    (2 for bad data or files, with one line naming them)."""
    single_threaded_opencv()
    info = init_dist(args.device)
    try:
        metrics = train(args, info)
        if info.is_main:
            print(json.dumps(metrics))
            if not args.test_only:
                print(checkpoint_summary(Path(args.output_dir)))
        return 0
    except (DataError, ResumeError, CheckpointError, PretrainedWeightsError) as e:
        message = str(e).strip().splitlines()[-1]
        print(f"heatpose train: error: {message}", file=sys.stderr)
        return 2
    finally:
        cleanup(info)


if __name__ == "__main__":  # torchrun -m training.train (deploy files): `heatpose train`
    from heatpose_cli.train import main

    sys.exit(main())

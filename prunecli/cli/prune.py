"""`prunecli prune`: compute masks with a criterion and write the pruned model."""

from __future__ import annotations

from prunecli.cli import method_options as mo
from prunecli.cli import options as opt
from prunecli.cli import train_options as to
from prunecli.cli.errors import handle_errors
from prunecli.cli.prune_run import PruneRequest, run_prune


@handle_errors
def prune_command(
    model: opt.ModelArg,
    sparsity: opt.Sparsity = None,
    method: opt.Method = None,
    pattern: opt.Pattern = None,
    granularity: opt.Granularity = "weight",
    round_to: opt.RoundTo = None,
    reconstruct: opt.Reconstruct = None,
    scores_file: opt.Scores = None,
    seed: opt.PruningSeed = 0,
    scope: opt.Scope = "global",
    iterations: opt.Iterations = None,
    schedule: opt.Schedule = "exponential",
    arch: opt.Arch = None,
    arch_kwargs: opt.ArchKwargs = None,
    trust_remote_code: opt.TrustRemoteCode = False,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    input_shape: opt.InputShape = None,
    output: opt.Output = None,
    format: opt.Format = "dense",
    force: opt.Force = False,
    dry_run: opt.DryRun = False,
    report_file: opt.ReportFile = None,
    group: opt.Group = None,
    json_mode: opt.Json = False,
    quiet: opt.Quiet = False,
    progress: opt.ShowProgress = False,
    data: opt.Data = None,
    eval_data: opt.EvalData = None,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "cpu",
    samples: opt.Samples = None,
    seq_len: opt.SeqLen = None,
    epochs: to.Epochs = None,
    steps: to.Steps = None,
    lr: to.Lr = to.DEFAULT_LR,
    optimizer: to.Optimizer = to.DEFAULT_OPTIMIZER,
    momentum: to.Momentum = 0.9,
    weight_decay: to.WeightDecay = 0.0,
    lr_schedule: to.LrSchedule = "constant",
    val_fraction: to.ValFraction = None,
    batches: mo.Batches = None,
    temperature: mo.Temperature = None,
    alpha: mo.Alpha = None,
    beta: mo.Beta = None,
    max_p: mo.MaxP = None,
    rate: mo.Rate = None,
    rewind_to: mo.RewindTo = None,
    rewind_step: mo.RewindStep = None,
    keep_best: mo.KeepBest = False,
    last_layer: mo.LastLayer = None,
    project_every: mo.ProjectEvery = None,
    iht_steps: mo.IhtSteps = None,
    bingo_fraction: mo.BingoFraction = None,
    bingo_every: mo.BingoEvery = None,
    starts: mo.Starts = None,
    warmup_epochs: mo.WarmupEpochs = None,
    fitness: mo.Fitness = None,
    gamma: mo.Gamma = None,
    dissipate_epochs: mo.DissipateEpochs = None,
    start_sparsity: mo.StartSparsity = None,
    dampening: mo.Dampening = None,
    owl_lambda: mo.OwlLambda = None,
    owl_m: mo.OwlM = None,
) -> None:
    """Prune MODEL to --sparsity with --method (or --scores) and write the sparse model.

    The output defaults to MODEL's name with .pruned.safetensors; -o - writes it to stdout
    (the report then goes to stderr). --format bitmask stores the pruned weights as a packed
    bitmask and their non-zero values (docs/formats.md), so the file shrinks with sparsity.

    Examples:

      prunecli prune model.safetensors --method magnitude --sparsity 0.9

      prunecli prune model.safetensors --method random --sparsity 90% --scope erk --seed 3 -o out.safetensors

      prunecli prune model.safetensors --scores scores.safetensors --sparsity 0.5 --scope layer

      prunecli prune model.safetensors --method magnitude --sparsity 0.9 --format bitmask

      prunecli prune mlp-digits.safetensors --method magnitude --sparsity 0.9 --eval digits

      prunecli prune init.safetensors --method iht --sparsity 0.9 --project-every 10 --data mnist1d --steps 1500

      prunecli prune init.safetensors --method kstarts+dissipating --sparsity 0.9 --starts 4 --gamma 0.5 --data mnist1d --epochs 40

      prunecli prune dense.safetensors --method imp --sparsity 0.92 --rate 0.2 --rewind-to init.safetensors --data mnist1d --steps 1500 --lr 0.02

      prunecli prune ./llama-like/ --method magnitude --sparsity 0.5 -o ./llama-like-50/ --dry-run

      prunecli prune ./llama-like/ --method magnitude --pattern 2:4 -o ./llama-like-24/

      prunecli prune ./llama-like/ --method wanda --sparsity 0.5 --data corpus.txt -o ./llama-50/

      prunecli prune ./llama-like/ --method sparsegpt --pattern 2:4 --data corpus.txt -o ./llama-24/

      prunecli prune ./llama-like/ --method wanda --sparsity 0.7 --scope owl --data corpus.txt -o ./llama-owl/
    """
    run_prune(PruneRequest.gather(locals()))  # the parameters by name, as the request's fields

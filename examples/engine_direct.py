"""Algorithm 1 with the engine alone, in any training loop (no BasicSR / MMagic runner): the README's example.

    python examples/engine_direct.py [--iters N] [--out DIR]

A small BasicSR BasicVSR learns to reproduce a frozen copy of itself on random clips while SSL sparsifies it; then S
is cut, the pruned network is saved as a state dict + JSON spec and rebuilt from them on a fresh dense network.
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

import ssl_plugin  # noqa: F401  (host compatibility shims before basicsr is imported)
from ssl_plugin.core import apply_spec
from ssl_plugin.core.algorithm import SSLConfig, SSLController


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--iters', type=int, default=40, help='extra finetuning iterations after the cut')
    p.add_argument('--out', type=Path, default=Path('engine_direct_out'))
    args = p.parse_args(argv)
    from basicsr.archs.basicvsr_arch import BasicVSR

    def build():
        return BasicVSR(num_feat=8, num_block=1)

    torch.manual_seed(0)
    net, target = build(), build().eval()
    clip = lambda: torch.rand(1, 2, 3, 36, 36)  # noqa: E731  (batch, frames, RGB, LR height, width)

    # 1-2. γ inserted, S chosen by L1 norm (a short SIR schedule: Δ, T1, τ, T2).
    cfg = SSLConfig.from_dict({'pruning_ratio': 0.5, 'scope': 'local',
                               'reg': {'delta': 0.02, 'interval': 1, 'ceiling': 0.1, 'stabilize_iter': 40}})
    ctrl = SSLController(cfg).configure(teacher_factory=build)  # the teacher for Temporal Finetuning
    ctrl.start(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)

    def train_step(x):
        opt.zero_grad()
        with torch.no_grad():
            y = target(x)
        with ctrl.clip_losses(net, x) as ssl_terms:  # {'sir': L_SIR} now, {'tf': L_TF} after the cut
            out = net(x)
        loss = (out - y).abs().mean() + sum(ssl_terms.values())
        loss.backward()
        opt.step()
        return ctrl.step()  # advances α; True when the sparsity stage has ended

    # 3. Sparsity stage until the schedule says prune.
    while not train_step(clip()):
        pass
    logs = ctrl.log_values(net)
    # 4. Cut S (RSC in the residual blocks), then 5. finetune with TF on a fresh Adam (the hosts' default too).
    ctrl.prune(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.iters):
        train_step(clip())

    # A pruned model = state dict + spec; rebuilt on a fresh dense network, loaded strictly.
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out / 'pruned.pth')
    (args.out / 'spec.json').write_text(json.dumps(ctrl.spec))
    rebuilt = apply_spec(build(), json.loads((args.out / 'spec.json').read_text()))
    rebuilt.load_state_dict(torch.load(args.out / 'pruned.pth', weights_only=True), strict=True)
    x = clip()
    with torch.no_grad():
        diff = float((rebuilt.eval()(x) - copy.deepcopy(net).eval()(x)).abs().max())
    dense_params = sum(t.numel() for t in build().parameters())
    result = {'gamma_pruned': logs['gamma_pruned'], 'gamma_kept': logs['gamma_kept'], 'units_in_S': int(
        logs['num_pruned']), 'params': [dense_params, sum(t.numel() for t in net.parameters())],
        'rebuilt_max_diff': diff}
    print(f'mean |γ| at the cut: pruned {result["gamma_pruned"]:.3f}, kept {result["gamma_kept"]:.3f}; params '
          f'{dense_params} -> {result["params"][1]}; rebuilt from state dict + spec: max difference {diff:.1e}')
    return result


if __name__ == '__main__':
    main()

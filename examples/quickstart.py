"""A worked example of bezier_kernels on embedded data: a batch of cubic Bezier paths.

Builds paths from Gaussian noise to two moons whose inner control points bend each path, evaluates
position, velocity and acceleration with every backend available here, checks them against the
float64 reference, and takes a few distillation-loss gradient steps on a tiny student.
"""
import time

import torch

import bezier_kernels as bk


def two_moons(n: int, gen: torch.Generator) -> torch.Tensor:
    angle = torch.rand(n, generator=gen) * torch.pi
    upper = torch.rand(n, generator=gen) < 0.5
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    return torch.stack([x, y], 1) + 0.05 * torch.randn(n, 2, generator=gen)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    B = 4096
    x0 = torch.randn(B, 2, generator=gen)
    x1 = two_moons(B, gen)
    # two guides per pair: points a third and two thirds along the line, pushed sideways
    normal = torch.stack([-(x1 - x0)[:, 1], (x1 - x0)[:, 0]], 1)
    guides = torch.stack([x0 + (x1 - x0) / 3 + 0.3 * normal, x0 + 2 * (x1 - x0) / 3 - 0.3 * normal], 1)
    t = torch.rand(B, generator=gen)

    print("backends:")
    for info in bk.available_backends().values():
        print("  ", info)
    ref = bk.bezier(x0.double(), x1.double(), t.double(), guides.double(), orders=(0, 1, 2), backend="torch")
    for name, info in bk.available_backends().items():
        if not info.available or ("cpu" not in info.devices and name != "torch"):
            continue
        start = time.perf_counter()
        outs = bk.bezier(x0, x1, t, guides, orders=(0, 1, 2), backend=name)
        ms = (time.perf_counter() - start) * 1e3
        errs = ", ".join(f"{(o.double() - r).norm() / r.norm():.1e}" for o, r in zip(outs, ref))
        print(f"{name:>6}: position/velocity/acceleration of {B} cubic paths in {ms:.2f} ms, rel. error {errs}")

    student = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    for step in range(201):
        t = torch.rand(B, generator=gen)
        (xt,) = bk.bezier(x0, x1, t, guides, orders=(0,))
        pred = student(torch.cat([xt, t[:, None]], 1))
        loss = bk.bezier_distill_loss(pred, x0, x1, t, guides, target="velocity")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"student step {step:3d}: velocity-matching loss {loss.item():.4f}")


if __name__ == "__main__":
    main()

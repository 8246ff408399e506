"""Distill a teacher trained with facebookresearch/flow_matching into a one-step student, through the library API.

1. Teacher: flow_matching's own 2-D loop (its CondOTProbPath, MLP and Adam; dropin_flow_matching.train) on the
   checkerboard, sampled with flow_matching's ODESolver.
2. Guides: bezier_distill.make_guides(teacher, x0) fits a quadratic Bezier curve to each of the teacher's ODE
   trajectories (flow_matching's time runs from noise at t = 0 to data at t = 1, as bezier_distill's does).
3. Student: bezier_distill.distill(paths) trains a one-step endpoint student; bezier_distill.sample(student, x0).
Prints the energy distance to held-out data of the teacher's samples and of the one-step student's.
Runs on a CPU in about a minute:  python examples/distill_flow_matching_teacher.py [--teacher-steps 1500]
"""
import argparse

import torch
from dropin_flow_matching import sample as ode_sample
from dropin_flow_matching import train
from flow_matching.path import CondOTProbPath
from toy2d import checkerboard, energy_distance

from bezier_distill import distill, make_guides, sample


def main(teacher_steps: int = 1500, student_steps: int = 1500, pairs: int = 8192, guide_steps: int = 50,
         student_width: int = 128, seed: int = 0, progress: bool = True) -> dict:
    """Returns the energy distances to held-out data: of the noise, the teacher's samples and the student's."""
    teacher, _ = train(CondOTProbPath(), teacher_steps, seed=seed)  # v(x, t), x [B, 2], t [B]
    teacher.eval().requires_grad_(False)
    torch.manual_seed(seed + 1)
    paths = make_guides(teacher, torch.randn(pairs, 2), degree=2, steps=guide_steps, progress=progress)
    student = distill(paths, steps=student_steps, target="endpoint", batch_size=512, lr=1e-3, warmup_steps=50,
                      ema_decay=0.995, model={"width": student_width, "depth": 3}, progress=progress)
    torch.manual_seed(seed + 2)
    noise, data = torch.randn(2000, 2), checkerboard(2000)
    result = {"noise": energy_distance(noise, data),
              "teacher": energy_distance(ode_sample(teacher, noise), data),
              "student_1_step": energy_distance(sample(student, noise, steps=1), data)}
    print(f"energy distance to the data: teacher (flow_matching ODESolver) {result['teacher']:.4f}, "
          f"one-step Bezier student {result['student_1_step']:.4f}, noise {result['noise']:.4f}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-steps", type=int, default=1500)
    parser.add_argument("--student-steps", type=int, default=1500)
    parser.add_argument("--pairs", type=int, default=8192)
    args = parser.parse_args()
    main(args.teacher_steps, args.student_steps, args.pairs)

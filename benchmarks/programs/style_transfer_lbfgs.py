"""Neural style transfer with L-BFGS and a closure, in the shape of PyTorch's neural style tutorial
(Gatys et al.): ContentLoss / StyleLoss modules inserted after conv layers of a VGG-like feature
network (here 1.2 M parameters, randomly initialised: no weights can be downloaded), the input image
optimised by `optim.LBFGS([input_img])` whose closure clamps the image, runs the model, sums the
weighted losses and calls backward(); L-BFGS evaluates the closure up to 20 times per step.

The content and style images are seeded synthetic textures (smooth blobs; diagonal stripes).

    python benchmarks/programs/style_transfer_lbfgs.py [--steps 60] [--size 256]

Prints the losses every few closure evaluations; the loop's own wall time goes to stderr
(benchmarks/runtime_programs.py reads it, with the peak memory of the process).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


class ContentLoss(nn.Module):
    def __init__(self, target):
        super().__init__()
        self.target = target.detach()
        self.loss = None

    def forward(self, x):
        self.loss = F.mse_loss(x, self.target)
        return x


def gram_matrix(x):
    b, c, h, w = x.size()
    features = x.view(b * c, h * w)
    return torch.mm(features, features.t()).div(b * c * h * w)


class StyleLoss(nn.Module):
    def __init__(self, target_feature):
        super().__init__()
        self.target = gram_matrix(target_feature).detach()
        self.loss = None

    def forward(self, x):
        self.loss = F.mse_loss(gram_matrix(x), self.target)
        return x


class Normalization(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def forward(self, img):
        return (img - self.mean) / self.std


def features(widths=(32, 32, "M", 64, 64, "M", 128, 128, "M", 256, 256)):
    """A VGG-like stack of conv / ReLU / max-pool layers."""
    layers, cin = [], 3
    for w in widths:
        if w == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, w, 3, padding=1), nn.ReLU(inplace=False)]
            cin = w
    return nn.Sequential(*layers).eval().requires_grad_(False)


def style_model_and_losses(cnn, style_img, content_img, content_layers=("conv_4",),
                           style_layers=("conv_1", "conv_2", "conv_3", "conv_4", "conv_5")):
    model = nn.Sequential(Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1
            name = f"conv_{i}"
        elif isinstance(layer, nn.ReLU):
            name = f"relu_{i}"
        else:
            name = f"pool_{i}"
        model.add_module(name, layer)
        if name in content_layers:
            content_loss = ContentLoss(model(content_img))
            model.add_module(f"content_loss_{i}", content_loss)
            content_losses.append(content_loss)
        if name in style_layers:
            style_loss = StyleLoss(model(style_img))
            model.add_module(f"style_loss_{i}", style_loss)
            style_losses.append(style_loss)
    # drop the layers after the last loss
    last = max(j for j, m in enumerate(model) if isinstance(m, (ContentLoss, StyleLoss)))
    return model[: last + 1], style_losses, content_losses


def synthetic_images(size, seed):
    g = torch.Generator().manual_seed(seed)
    content = F.interpolate(torch.rand(1, 3, size // 16, size // 16, generator=g), size=(size, size),
                            mode="bicubic", align_corners=False).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=g) * 6.28
    style = (0.5 + 0.5 * torch.sin((xx + yy)[None] * 0.3 + phase))[None]
    return content, style


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="closure evaluations (the tutorial's num_steps)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--style-weight", type=float, default=1e4)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    content_img, style_img = synthetic_images(args.size, args.seed)
    cnn = features()
    print(f"feature network: {sum(p.numel() for p in cnn.parameters())} parameters, image {args.size}x{args.size}")
    model, style_losses, content_losses = style_model_and_losses(cnn, style_img, content_img)
    input_img = content_img.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([input_img])

    start = time.perf_counter()
    run = [0]
    while run[0] < args.steps:

        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(sl.loss for sl in style_losses) * args.style_weight
            content_score = sum(cl.loss for cl in content_losses) * args.content_weight
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            if run[0] % 10 == 0:
                print(f"run {run[0]}: style loss {style_score.item():.4f} content loss {content_score.item():.4f}")
            return style_score + content_score

        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    if not bool(torch.isfinite(input_img).all()):
        sys.exit("the image is not finite")
    print(f"done after {run[0]} closure evaluations, mean pixel {input_img.mean().item():.4f}")
    print(f"train-loop-seconds {time.perf_counter() - start:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()

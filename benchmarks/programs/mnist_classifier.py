"""Image classifier in the shape of PyTorch's examples/mnist (main.py): two conv layers, max-pool,
dropout, two linear layers, `F.log_softmax` + `F.nll_loss`, Adadelta with StepLR, a DataLoader, and
train / test loops with `torch.no_grad()` evaluation.

No data set can be downloaded here: the images are synthetic, 28x28, ten classes, each a seeded
random stroke template, shifted by up to two pixels, scaled and noised per sample (a seeded
TensorDataset), normalised like MNIST.

    python benchmarks/programs/mnist_classifier.py [--epochs 2] [--batch-size 64] [--train-size 3200]

Prints the training loss and the test accuracy per epoch; the training loop's own wall time goes to
stderr (benchmarks/runtime_programs.py reads it).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def stroke_templates(seed):
    """Per class a 28x28 template of four random strokes, three pixels thick."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.zeros(10, 28, 28)
    for c in range(10):
        for _ in range(4):  # four strokes of random direction per class
            r, col = torch.randint(6, 22, (2,), generator=g).tolist()
            dr, dc = torch.randint(-1, 2, (2,), generator=g).tolist()
            for k in range(8):
                templates[c, min(max(r + k * dr, 0), 27), min(max(col + k * dc, 0), 27)] = 1.0
    return F.max_pool2d(templates[:, None], 3, 1, padding=1)[:, 0]


def synthetic_digits(templates, n, seed):
    """n images (1x28x28) and labels: a class template shifted by up to two pixels, scaled, noised."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    shifts = torch.randint(-2, 3, (n, 2), generator=g)
    images = torch.stack([torch.roll(templates[y], tuple(s.tolist()), dims=(0, 1)) for y, s in zip(labels, shifts)])
    images = images * (0.4 + 0.6 * torch.rand(n, 1, 1, generator=g)) + 0.6 * torch.rand(n, 28, 28, generator=g)
    images = (images.clamp(0, 1)[:, None] - 0.1307) / 0.3081
    return TensorDataset(images, labels)


def train(args, model, loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(loader.dataset)}]\tLoss: {loss.item():.6f}")


def test(model, loader):
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += output.argmax(dim=1).eq(target).sum().item()
    test_loss /= len(loader.dataset)
    print(f"Test set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{len(loader.dataset)}")
    return test_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--train-size", type=int, default=3200)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    templates = stroke_templates(args.seed)
    train_set = synthetic_digits(templates, args.train_size, args.seed + 1)
    test_set = synthetic_digits(templates, args.test_size, args.seed + 2)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size)
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        train(args, model, train_loader, optimizer, epoch)
        test_loss = test(model, test_loader)
        if test_loss != test_loss:
            sys.exit("test loss is NaN")
        scheduler.step()
    print(f"train-loop-seconds {time.perf_counter() - start:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()

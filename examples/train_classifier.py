"""A small PyTorch training script with three classic NaN/accuracy bugs.

Run `stabcheck check examples/` to see them; `stabcheck explain STB101`
explains one.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 10)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        return self.softmax(self.fc2(F.relu(self.fc1(x))))


def train(loader, epochs=1):
    model = Net()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            probs = model(images.view(-1, 784))
            loss = criterion(probs, labels)
            loss.backward()
            optimizer.step()


def auxiliary_loss(logits, targets):
    gate = torch.sigmoid(logits)
    return F.binary_cross_entropy(gate, targets)


def soft_label_loss(logits, soft_targets):
    return -(soft_targets * torch.log(F.softmax(logits, dim=-1))).sum(-1).mean()

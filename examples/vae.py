"""A VAE encoder and a metric-learning head, each with an overflow or a
division that blows up."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class Encoder(nn.Module):
    def __init__(self, d_in=784, d_latent=16):
        super().__init__()
        self.hidden = nn.Linear(d_in, 256)
        self.mu = nn.Linear(256, d_latent)
        self.log_var = nn.Linear(256, d_latent)

    def forward(self, x):
        h = F.relu(self.hidden(x))
        mu, log_var = self.mu(h), self.log_var(h)
        std = torch.sqrt(torch.exp(log_var))
        return mu + std * torch.randn_like(std)


def cosine_embedding(a, b):
    a = a / a.norm(dim=-1, keepdim=True)
    return (a * F.normalize(b, dim=-1)).sum(-1)

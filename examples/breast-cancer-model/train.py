"""Logistic regression on the breast-cancer dataset: fit on train.csv, score test.csv.

Reads the dataset proctor mounts read-only at /data/input and writes
{"perf": <test accuracy>, "auc": …, "log_loss": …} to /data/perf.json.
"""

import json
import os

import numpy as np

INPUT = "/data/input"
OUTPUT = "/data/perf.json"
LABEL = "malignant"
LEARNING_RATE = 0.1
EPOCHS = 2000
L2 = 1e-3


def load(name):
    path = os.path.join(INPUT, name)
    with open(path) as handle:
        header = handle.readline().strip().split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    label = header.index(LABEL)
    return np.delete(table, label, axis=1), table[:, label]


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def log_loss(y, p):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(y, score):
    """Probability that a random positive scores above a random negative."""
    order = np.argsort(score)
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    positives = y == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main():
    x_train, y_train = load("train.csv")
    x_test, y_test = load("test.csv")
    # Standardise with the training split's statistics only.
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-12
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w, b = np.zeros(x_train.shape[1]), 0.0
    for epoch in range(1, EPOCHS + 1):
        p = sigmoid(x_train @ w + b)
        w -= LEARNING_RATE * ((x_train.T @ (p - y_train)) / len(y_train) + L2 * w)
        b -= LEARNING_RATE * float(np.mean(p - y_train))
        if epoch % 500 == 0:
            print(f"epoch {epoch:5d}  train log-loss {log_loss(y_train, p):.4f}", flush=True)
    p = sigmoid(x_test @ w + b)
    result = {
        "perf": float(np.mean((p > 0.5) == y_test)),
        "auc": auc(y_test, p),
        "log_loss": log_loss(y_test, p),
    }
    print(f"test accuracy {result['perf']:.4f}  auc {result['auc']:.4f}", flush=True)
    with open(OUTPUT + ".tmp", "w") as handle:
        json.dump(result, handle)
    os.replace(OUTPUT + ".tmp", OUTPUT)


if __name__ == "__main__":
    main()

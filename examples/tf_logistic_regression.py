"""Logistic regression the way many TensorFlow tutorials wrote it."""
import tensorflow as tf


def loss_fn(w, x, y):
    prediction = tf.sigmoid(tf.matmul(x, w))
    return -tf.reduce_mean(y * tf.math.log(prediction) + (1 - y) * tf.math.log(1 - prediction))

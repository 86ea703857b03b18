"""Why the training step compiles only the network with XLA when there are several replicas (train/step.py).

  python docs/checks/xla_replicas.py

On 2 virtual CPU devices under MirroredStrategy, a function run per replica that calls a tf.function(jit_compile=True)
holding a collective (``all_reduce``, as the step's objective does for the global mask CE) fails while tracing
("merge_call called while defining a new graph or a tf.function"); the same compiled function without the collective
runs, and differentiating through it compiles its backward function with XLA too (``_XlaMustCompile`` on both).
Prints one line per case and exits 0 when TensorFlow behaves as described.
"""
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    weights = tf.Variable([1.0, 2.0, 3.0])


@tf.function(jit_compile=True)
def compiled_with_collective(x):
    local = tf.reduce_sum(x)
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)


@tf.function(jit_compile=True)
def compiled_network(x):
    return tf.reduce_sum(tf.square(x * weights))


def gradient_outside(x):
    with tf.GradientTape() as tape:
        local = compiled_network(x)
        total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local))
        loss = local / (1.0 + total)
    return tape.gradient(loss, weights)


def main():
    x = tf.ones([3])
    try:
        tf.function(lambda: strategy.run(lambda value: compiled_with_collective(value), args=(x,)))()
        print("collective inside the compiled per-replica function: ran (the limitation is gone)")
        inside_fails = False
    except RuntimeError as error:
        reason = next(line for line in str(error).splitlines() if "merge_call" in line).strip().split(". ")[0]
        print(f"collective inside the compiled per-replica function: {reason}")
        inside_fails = True
    step = tf.function(lambda value: strategy.run(gradient_outside, args=(value,)))
    grads = strategy.experimental_local_results(step(x))
    library = step.get_concrete_function(x).graph.as_graph_def().library.function
    compiled = sorted(f.signature.name for f in library if f.attr["_XlaMustCompile"].b)
    # local = 1 + 4 + 9 = 14, total = 28: d(local / 29)/dw = 2 x^2 w / 29 = [2, 4, 6] / 29 on each replica.
    print(f"compiled network, collective outside: gradients {[g.numpy().round(4).tolist() for g in grads]} "
          f"(expected [2, 4, 6] / 29 = {[round(v / 29, 4) for v in (2, 4, 6)]}); XLA functions {compiled}")
    assert inside_fails and any("backward" in name for name in compiled)
    for gradient in grads:
        assert abs(gradient.numpy() - [2 / 29, 4 / 29, 6 / 29]).max() < 1e-6


if __name__ == "__main__":
    main()

// The bounded admission queue in front of each model (the server's routes, StreamGuard's sessions): a pure unit.

import t from "tap";
import {AdmissionQueue, QueueFullError} from "../../src/concurrency/AdmissionQueue.js";

t.test("at most `slots` holders, then a first-come-first-served wait, then a QueueFullError", async (t) => {
    const changes: Array<[number, number]> = [];
    let refused = 0;
    const queue = new AdmissionQueue("Gen model", 2, 2, (running, waiting) => changes.push([running, waiting]), () => refused++);
    const first = await queue.acquire();
    const second = await queue.acquire();
    const order: string[] = [];
    const third = queue.acquire().then((release) => (order.push("third"), release));
    const fourth = queue.acquire().then((release) => (order.push("fourth"), release));
    await t.rejects(queue.acquire(), new QueueFullError("Gen model", 2, 2));
    t.equal(new QueueFullError("Gen model", 2, 2).message, "The Gen model is busy: 2 running and 2 waiting, the most this server queues; retry later");
    t.equal(refused, 1);
    t.same([queue.active, queue.depth], [2, 2]);
    first();
    first(); // a second release does nothing
    (await third)();
    second();
    (await fourth)();
    t.same(order, ["third", "fourth"]);
    t.same([queue.active, queue.depth], [0, 0]);
    t.same(changes[changes.length - 1], [0, 0], "the last change reported is the idle state");
});

t.test("a waiter whose signal aborts leaves the queue; run gives the slot back when its work fails", async (t) => {
    const queue = new AdmissionQueue("Stream model", 1, 4);
    const held = await queue.acquire();
    const controller = new AbortController();
    const waiting = queue.acquire(controller.signal);
    t.equal(queue.depth, 1);
    controller.abort(new Error("client gone"));
    await t.rejects(waiting, {message: "client gone"});
    t.equal(queue.depth, 0);
    await t.rejects(queue.acquire(AbortSignal.abort(new Error("already gone"))), {message: "already gone"});
    held();
    await t.rejects(queue.run(async () => {
        throw new Error("work failed");
    }), {message: "work failed"});
    t.equal(queue.active, 0, "the slot was given back");
    t.equal(await queue.run(async () => 42), 42);

    const none = new AdmissionQueue("Gen model", 1, 0);
    const only = await none.acquire();
    await t.rejects(none.acquire(), {name: "QueueFullError"}, "maxWaiting 0: no one waits");
    only();
});

t.test("acquireMany takes its slots together, first come first served; a large waiter that leaves lets the next in", async (t) => {
    const queue = new AdmissionQueue("Stream model", 3, 4);
    const one = await queue.acquire();
    const order: string[] = [];
    const controller = new AbortController();
    const three = queue.acquireMany(3, controller.signal);
    const two = queue.acquireMany(2).then((releases) => (order.push("two"), releases));
    const single = queue.acquire().then((release) => (order.push("single"), release));
    await new Promise((resolve) => setImmediate(resolve));
    t.same(order, [], "nobody overtakes the waiter at the head, though two slots are free");
    controller.abort(new Error("gone"));
    await t.rejects(three, {message: "gone"});
    const releases = await two;
    t.same(order, ["two"]);
    t.equal(queue.active, 3);
    one();
    (await single)();
    releases.forEach((release) => release());
    t.same(order, ["two", "single"]);
    t.equal(queue.active, 0);
    await t.rejects(queue.acquireMany(4), {name: "RangeError", message: "4 slots are asked of the Stream model, which has 3"});
});

// Compile-only stub of Guava's ListenableFuture, the return type of WorkManager's queries.
// WorkManager depends on the standalone `com.google.guava:listenablefuture` artifact, whose one
// interface is this (https://guava.dev/releases/snapshot-jre/api/docs/com/google/common/util/concurrent/ListenableFuture.html):
// a java.util.concurrent.Future with addListener. The shim uses only Future.get(timeout, unit).
package com.google.common.util.concurrent

import java.util.concurrent.Executor
import java.util.concurrent.Future

interface ListenableFuture<V> : Future<V> {
    fun addListener(listener: Runnable, executor: Executor)
}

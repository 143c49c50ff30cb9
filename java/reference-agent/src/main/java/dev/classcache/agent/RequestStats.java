package dev.classcache.agent;

import java.util.concurrent.atomic.AtomicLong;

/**
 * Request counter called from the advice that is inlined into
 * {@code DispatcherServlet#doService}.
 *
 * <p>This class is the only agent class referenced by woven code. It is put on
 * {@code -Xbootclasspath/a} so that it resolves from the bootstrap class loader
 * no matter which loader defined the woven class. It must therefore use JDK
 * classes only and must not depend on {@link ReferenceAgent#premain} having run:
 * when the woven class comes from a class-data archive and the agent is not
 * attached, nothing but this class's own static state is available.
 */
public final class RequestStats {

	private static final AtomicLong REQUESTS = new AtomicLong();

	private RequestStats() {
	}

	/**
	 * Records the start of a request.
	 * @return the number of this request, starting at 1
	 */
	public static long begin() {
		return REQUESTS.incrementAndGet();
	}

	/**
	 * Records the end of a request and prints one line to standard error.
	 * @param method the HTTP method
	 * @param uri the request URI
	 * @param status the response status
	 * @param startNanos the value of {@link System#nanoTime()} when the request started
	 */
	public static void end(String method, String uri, int status, long startNanos) {
		long micros = (System.nanoTime() - startNanos) / 1_000L;
		System.err.println("[reference-agent] " + method + " " + uri + " -> " + status + " in " + micros
				+ " us (requests=" + REQUESTS.get() + ")");
	}

	/**
	 * Returns the number of requests seen so far.
	 * @return the request count
	 */
	public static long count() {
		return REQUESTS.get();
	}

}

package dev.classcache.agent;

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

import net.bytebuddy.asm.Advice;

/**
 * Advice for {@code DispatcherServlet#doService(HttpServletRequest, HttpServletResponse)}.
 *
 * <p>Used in inlined form: Byte Buddy copies the bodies of these methods into
 * {@code doService}, so the woven class references only JDK classes, the servlet
 * types it already uses and {@link RequestStats}. This class itself is never
 * loaded by the woven code.
 *
 * <p>The parameters are declared as {@code Object} and cast in the method bodies.
 * The agent is loaded by the bootstrap class loader, which cannot see the servlet
 * API; Byte Buddy reads this class reflectively, and a servlet type in a method
 * signature would then fail to resolve. Types that appear only in method bodies
 * are resolved in the woven class, where the application provides them.
 */
public final class RequestAdvice {

	static final String HEADER = "X-Reference-Agent-Requests";

	private RequestAdvice() {
	}

	@Advice.OnMethodEnter(suppress = Throwable.class)
	public static long enter(@Advice.Argument(1) Object response) {
		long start = System.nanoTime();
		long request = RequestStats.begin();
		((HttpServletResponse) response).setHeader(HEADER, Long.toString(request));
		return start;
	}

	@Advice.OnMethodExit(onThrowable = Throwable.class, suppress = Throwable.class)
	public static void exit(@Advice.Enter long start, @Advice.Argument(0) Object request,
			@Advice.Argument(1) Object response, @Advice.Thrown Throwable thrown) {
		HttpServletRequest httpRequest = (HttpServletRequest) request;
		int status = ((HttpServletResponse) response).getStatus();
		if (thrown != null && status < 400) {
			status = 500;
		}
		RequestStats.end(httpRequest.getMethod(), httpRequest.getRequestURI(), status, start);
	}

}

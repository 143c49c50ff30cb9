package dev.classcache.agent;

import static net.bytebuddy.matcher.ElementMatchers.isDeclaredBy;
import static net.bytebuddy.matcher.ElementMatchers.named;
import static net.bytebuddy.matcher.ElementMatchers.not;
import static net.bytebuddy.matcher.ElementMatchers.takesArgument;
import static net.bytebuddy.matcher.ElementMatchers.takesArguments;

import java.lang.instrument.Instrumentation;

import net.bytebuddy.agent.builder.AgentBuilder;
import net.bytebuddy.asm.Advice;
import net.bytebuddy.utility.JavaModule;

/**
 * Reference APM agent: times every request that passes through Spring MVC's
 * {@code DispatcherServlet#doService}, numbers it, adds an
 * {@code X-Reference-Agent-Requests} response header and logs one line per request.
 *
 * <p>The agent jar is expected on both {@code -Xbootclasspath/a} and
 * {@code -javaagent}, so this class and Byte Buddy are loaded by the bootstrap
 * class loader. The advice is inlined, which keeps the woven bytes free of any
 * dependency on this class: a class-data archive that contains the woven
 * {@code DispatcherServlet} works without the agent being attached.
 */
public final class ReferenceAgent {

	static final String PREFIX = "[reference-agent] ";

	static final String NEXUS_DISABLED = "net.bytebuddy.nexus.disabled";

	static final String DISPATCHER_SERVLET = "org.springframework.web.servlet.DispatcherServlet";

	private ReferenceAgent() {
	}

	public static void premain(String args, Instrumentation instrumentation) {
		System.err.println(PREFIX + "premain");
		install(instrumentation);
	}

	public static void agentmain(String args, Instrumentation instrumentation) {
		System.err.println(PREFIX + "agentmain");
		install(instrumentation);
	}

	static void install(Instrumentation instrumentation) {
		// The advice is inlined and class formats are frozen, so Byte Buddy's Nexus
		// (self-initialization of generated types) is never needed. Disabling it keeps
		// the AgentBuilder from probing sun.misc.Unsafe, which JDK 24+ warns about.
		// The shade plugin relocates this property name together with Byte Buddy, so
		// it affects only the agent's private copy.
		if (System.getProperty(NEXUS_DISABLED) == null) {
			System.setProperty(NEXUS_DISABLED, "true");
		}
		new AgentBuilder.Default()
			.disableClassFormatChanges()
			.with(AgentBuilder.RedefinitionStrategy.RETRANSFORMATION)
			.with(new ErrorListener())
			.ignore(not(named(DISPATCHER_SERVLET)))
			.type(named(DISPATCHER_SERVLET))
			.transform((builder, type, classLoader, module, protectionDomain) -> builder
				.visit(Advice.to(RequestAdvice.class).on(named("doService")
					.and(isDeclaredBy(named(DISPATCHER_SERVLET)))
					.and(takesArguments(2))
					.and(takesArgument(0, named("jakarta.servlet.http.HttpServletRequest")))
					.and(takesArgument(1, named("jakarta.servlet.http.HttpServletResponse"))))))
			.installOn(instrumentation);
	}

	static final class ErrorListener extends AgentBuilder.Listener.Adapter {

		@Override
		public void onError(String typeName, ClassLoader classLoader, JavaModule module, boolean loaded,
				Throwable throwable) {
			System.err.println(PREFIX + "failed to transform " + typeName + ": " + throwable);
			throwable.printStackTrace();
		}

	}

}

package dev.classcache.probe;

import java.io.File;
import java.lang.instrument.Instrumentation;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * classcache's launch probe: a Java agent a build pod puts into JAVA_TOOL_OPTIONS of an init
 * container that runs the workload's image with its own ENTRYPOINT, so that the launch the image
 * really makes can be read instead of guessed. In the first JVM the ENTRYPOINT starts with the
 * `java` launcher and a main class or jar, before main runs, it records:
 *
 *   {"command": [java.home/bin/java, options…, "-jar", jar | "-cp", class path, main | "-m", module, args…],
 *    "workingDir": user.dir}
 *
 * The options are the JVM's input arguments without what came from the environment
 * (JAVA_TOOL_OPTIONS, which also carries this probe, JDK_JAVA_OPTIONS and _JAVA_OPTIONS: a
 * patched pod keeps those variables, so they must not be in its command too) and without what the
 * launcher adds itself. The args are taken from /proc/self/cmdline, which keeps arguments that
 * contain spaces whole. Where the launch cannot be told exactly, it records
 * {"error": "…"} instead.
 *
 * The record goes to the file named by the agent argument (created, never overwritten: the first
 * JVM wins) and, when it fits, to the container's termination message, where the operator reads
 * it. Then the JVM halts with status 0, before main: the app never runs here. A JVM that runs no
 * main class (java -version) or that is a JDK tool (keytool, jar) is left alone. A JVM whose
 * JAVA_TOOL_OPTIONS differ from what the pod set (CLASSCACHE_PROBE_TOOL_OPTIONS) was started by
 * an ENTRYPOINT that changes the JVM's options itself (a buildpacks launcher): a pod started with
 * the recorded command directly would lose them, so that is an error.
 *
 * Java 8 bytecode, no dependencies: it runs on whatever JVM the application image has.
 */
public final class LaunchProbe {
  /** What the kubelet reads as a container's termination message (CLASSCACHE_TERMINATION_LOG elsewhere); it keeps at most 4096 bytes. */
  static final String TERMINATION_LOG = "/dev/termination-log";
  static final int TERMINATION_LIMIT = 4096;
  /** JAVA_TOOL_OPTIONS as the pod set it, for comparison with what the JVM got. */
  static final String EXPECTED_TOOL_OPTIONS = "CLASSCACHE_PROBE_TOOL_OPTIONS";

  private LaunchProbe() {}

  public static void premain(String args, Instrumentation inst) {
    String out = args == null || args.isEmpty() ? "/classcache-probe/launch.json" : args;
    String record;
    try {
      record = record(System.getenv(), System.getProperties(), ManagementFactory.getRuntimeMXBean().getInputArguments(), cmdline(), ownJar());
    } catch (Throwable t) {
      record = error("the launch probe failed: " + t);
    }
    if (record == null) return;
    save(Paths.get(out), record);
    System.err.println("classcache launch probe: recorded this JVM's launch in " + out + "; it ends here with status 0, before main");
    System.err.flush();
    Runtime.getRuntime().halt(0);
  }

  /** The record of this launch, or null when this JVM is not an app's launch (left to run). */
  static String record(java.util.Map<String, String> env, java.util.Properties props, List<String> input, List<String> argv, String ownJar) {
    String command = props.getProperty("sun.java.command");
    if (command == null || command.trim().isEmpty()) return null;
    if (argv != null && !argv.isEmpty() && !"java".equals(new File(argv.get(0)).getName())) return null;
    String expected = env.get(EXPECTED_TOOL_OPTIONS);
    String tool = env.get("JAVA_TOOL_OPTIONS");
    if (expected != null && !expected.equals(tool == null ? "" : tool)) {
      return error("the image's ENTRYPOINT changed JAVA_TOOL_OPTIONS before it started java (as a Cloud Native Buildpacks launcher does): "
          + "a pod started with the recorded java command would lose those options");
    }
    List<String> options = new ArrayList<>(input);
    if (!removePrefix(options, jvmTokens(tool))) return error("the JVM's options do not begin with JAVA_TOOL_OPTIONS as expected");
    if (feature(props) >= 9 && !removePrefix(options, jvmTokens(env.get("JDK_JAVA_OPTIONS")))) {
      return error("the JVM's options cannot be told apart from JDK_JAVA_OPTIONS (an @argfile in it?)");
    }
    if (!removeSuffix(options, jvmTokens(env.get("_JAVA_OPTIONS")))) return error("the JVM's options do not end with _JAVA_OPTIONS as expected");
    List<String> kept = new ArrayList<>();
    for (String o : options) {
      if (o.startsWith("-Djdk.module.main=") || o.startsWith("-Dsun.java.launcher")) continue; // the launcher's own
      if (ownJar != null && (o.equals("-javaagent:" + ownJar) || o.startsWith("-javaagent:" + ownJar + "="))) continue;
      kept.add(o);
    }

    List<String> out = new ArrayList<>();
    out.add(props.getProperty("java.home") + File.separator + "bin" + File.separator + "java");
    out.addAll(kept);
    String classPath = props.getProperty("java.class.path", "");
    String main;
    if (props.getProperty("jdk.module.main") != null) {
      main = firstToken(command);
      out.add("-m");
    } else if (!classPath.isEmpty() && (command.equals(classPath) || command.startsWith(classPath + " "))) {
      main = classPath; // -jar: the launcher sets the class path to the jar, as given
      out.add("-jar");
    } else {
      main = firstToken(command);
      out.add("-cp");
      out.add(classPath.isEmpty() ? "." : classPath);
    }
    out.add(main);
    if (command.length() > main.length()) out.addAll(appArgs(command.substring(main.length() + 1), argv));
    return "{\"command\":" + array(out) + ",\"workingDir\":" + quote(props.getProperty("user.dir", "")) + "}";
  }

  /**
   * The app's arguments: the launcher joins them with spaces into sun.java.command, so they are
   * taken whole from the end of the process's argv, as many as join to the same text. Without
   * an argv (not Linux), split at spaces.
   */
  static List<String> appArgs(String tail, List<String> argv) {
    if (argv != null) {
      for (int k = 1; k < argv.size(); k++) {
        List<String> last = argv.subList(argv.size() - k, argv.size());
        if (String.join(" ", last).equals(tail)) return new ArrayList<>(last);
      }
    }
    return new ArrayList<>(Arrays.asList(tail.split(" ", -1)));
  }

  static String firstToken(String command) {
    int space = command.indexOf(' ');
    return space < 0 ? command : command.substring(0, space);
  }

  static int feature(java.util.Properties props) {
    String v = props.getProperty("java.specification.version", "8");
    try {
      return v.startsWith("1.") ? Integer.parseInt(v.substring(2)) : Integer.parseInt(v);
    } catch (NumberFormatException e) {
      return 8;
    }
  }

  /**
   * An options variable split as the JVM splits it: at whitespace outside '…' or "…", the quotes
   * dropped (HotSpot's Arguments::parse_options_buffer; the launcher's JDK_JAVA_OPTIONS alike).
   */
  static List<String> jvmTokens(String text) {
    List<String> out = new ArrayList<>();
    if (text == null) return out;
    int i = 0;
    int n = text.length();
    while (i < n) {
      while (i < n && Character.isWhitespace(text.charAt(i))) i++;
      if (i >= n) break;
      StringBuilder token = new StringBuilder();
      while (i < n && !Character.isWhitespace(text.charAt(i))) {
        char c = text.charAt(i);
        if (c != '\'' && c != '"') {
          token.append(c);
          i++;
          continue;
        }
        int close = text.indexOf(c, i + 1);
        token.append(text, i + 1, close < 0 ? n : close);
        i = close < 0 ? n : close + 1;
      }
      out.add(token.toString());
    }
    return out;
  }

  static boolean removePrefix(List<String> list, List<String> prefix) {
    if (prefix.size() > list.size() || !list.subList(0, prefix.size()).equals(prefix)) return false;
    list.subList(0, prefix.size()).clear();
    return true;
  }

  static boolean removeSuffix(List<String> list, List<String> suffix) {
    int from = list.size() - suffix.size();
    if (from < 0 || !list.subList(from, list.size()).equals(suffix)) return false;
    list.subList(from, list.size()).clear();
    return true;
  }

  /** The process's argv from /proc/self/cmdline; null where there is none. */
  static List<String> cmdline() {
    try {
      byte[] raw = Files.readAllBytes(Paths.get("/proc/self/cmdline"));
      List<String> out = new ArrayList<>();
      int start = 0;
      for (int i = 0; i < raw.length; i++) {
        if (raw[i] != 0) continue;
        out.add(new String(raw, start, i - start, StandardCharsets.UTF_8));
        start = i + 1;
      }
      return out.isEmpty() ? null : out;
    } catch (Throwable t) {
      return null;
    }
  }

  static String ownJar() {
    try {
      return new File(LaunchProbe.class.getProtectionDomain().getCodeSource().getLocation().toURI()).getPath();
    } catch (Throwable t) {
      return null;
    }
  }

  /** The record into `file` (only if no JVM wrote it before) and, if it fits, the termination log. */
  static void save(Path file, String record) {
    byte[] bytes = record.getBytes(StandardCharsets.UTF_8);
    try {
      Files.write(file, bytes, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
    } catch (FileAlreadyExistsException e) {
      return; // an earlier JVM of this ENTRYPOINT was recorded: it is the launch
    } catch (Throwable t) {
      System.err.println("classcache launch probe: cannot write " + file + ": " + t);
    }
    String where = System.getenv("CLASSCACHE_TERMINATION_LOG");
    Path log = Paths.get(where == null || where.isEmpty() ? TERMINATION_LOG : where);
    byte[] message = bytes.length <= TERMINATION_LIMIT ? bytes
        : error("the recorded launch is " + bytes.length + " bytes, more than the " + TERMINATION_LIMIT + " a termination message holds").getBytes(StandardCharsets.UTF_8);
    try {
      if (Files.isRegularFile(log)) Files.write(log, message);
    } catch (Throwable ignored) {
      // the file has it
    }
  }

  static String error(String message) {
    return "{\"error\":" + quote(message) + "}";
  }

  static String array(List<String> items) {
    StringBuilder b = new StringBuilder("[");
    for (int i = 0; i < items.size(); i++) b.append(i == 0 ? "" : ",").append(quote(items.get(i)));
    return b.append(']').toString();
  }

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }
}

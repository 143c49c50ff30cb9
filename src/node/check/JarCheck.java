package dev.classcache.check;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.util.List;

/**
 * The last init step of a patched pod, run with the pod's own JVM in the pod's own image: does
 * the application in this image have exactly the jars the node's archive was built from? The
 * init step before it left the pod's own launch active and staged the archive's launch next to
 * it (archive.jvm.args, archive.launch.args), with one line per jar in check.args:
 * "<expected sha256> <path in this image>". Only when every jar's digest matches are the staged
 * files moved over the active ones; otherwise the pod starts as it would without classcache and
 * the reason goes to the termination message, where the operator reads it. Never fails: it
 * always exits 0, whatever goes wrong (a pod must never be blocked by classcache).
 *
 * Java 8 bytecode, no dependencies: it runs on whatever JVM the application image has.
 */
public final class JarCheck {
  private JarCheck() {}

  public static void main(String[] args) {
    String result;
    try {
      result = check(Paths.get(args.length > 0 ? args[0] : "/classcache"));
    } catch (Throwable t) {
      result = "{\"archive\":false,\"reason\":\"check-failed\",\"message\":" + quote(String.valueOf(t)) + "}";
    }
    System.out.println(result);
    // The kubelet makes the termination log of every container; elsewhere there is none to write.
    Path log = Paths.get("/dev/termination-log");
    try {
      if (Files.isRegularFile(log)) Files.write(log, result.getBytes(StandardCharsets.UTF_8));
    } catch (Throwable ignored) {
      // stdout has it
    }
  }

  static String check(Path dir) throws Exception {
    Path list = dir.resolve("check.args");
    if (!Files.exists(list)) return "{\"archive\":false,\"reason\":\"no-archive\"}";
    List<String> lines = Files.readAllLines(list, StandardCharsets.UTF_8);
    for (String line : lines) {
      if (line.trim().isEmpty()) continue;
      int space = line.indexOf(' ');
      String expected = line.substring(0, space);
      String path = line.substring(space + 1);
      String actual = sha256(Paths.get(path));
      if (!expected.equals(actual)) {
        return "{\"archive\":false,\"reason\":\"app-jar-differs\",\"jar\":" + quote(path) + ",\"expected\":" + quote(expected) + ",\"actual\":" + quote(actual) + "}";
      }
    }
    Files.move(dir.resolve("archive.jvm.args"), dir.resolve("jvm.args"), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    Files.move(dir.resolve("archive.launch.args"), dir.resolve("launch.args"), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    return "{\"archive\":true}";
  }

  static String sha256(Path file) throws Exception {
    MessageDigest md = MessageDigest.getInstance("SHA-256");
    byte[] buf = new byte[1 << 16];
    try (InputStream in = Files.newInputStream(file)) {
      for (int n = in.read(buf); n > 0; n = in.read(buf)) md.update(buf, 0, n);
    }
    StringBuilder sb = new StringBuilder();
    for (byte b : md.digest()) sb.append(String.format("%02x", b & 0xff));
    return sb.toString();
  }

  static String quote(String s) {
    StringBuilder sb = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') sb.append('\\').append(c);
      else if (c < 0x20) sb.append(String.format("\\u%04x", (int) c));
      else sb.append(c);
    }
    return sb.append('"').toString();
  }
}

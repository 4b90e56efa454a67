// Spring Security's own symmetric text encryption (Encryptors.text, the one Spring Cloud
// Config uses for `encrypt.key`), driven line by line so a test can check that Ferry and
// Java read each other's cipher texts. Run with spring-security-crypto on the class path:
//
//   java -cp spring-security-crypto.jar SpringCrypto KEY SALT
//
// Each stdin line is `E <base64 plain text>` or `D <cipher text>`; each answer line is
// `OK <base64 result>` or `ERR <exception class>` (what the Config Server maps to a status).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

import org.springframework.security.crypto.encrypt.Encryptors;
import org.springframework.security.crypto.encrypt.TextEncryptor;

public class SpringCrypto {

	public static void main(String[] args) throws Exception {
		TextEncryptor encryptor = Encryptors.text(args[0], args[1]);
		BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
		String line;
		while ((line = in.readLine()) != null) {
			String argument = line.length() > 2 ? line.substring(2) : "";
			try {
				String result = line.startsWith("E ")
						? encryptor.encrypt(new String(Base64.getDecoder().decode(argument), StandardCharsets.UTF_8))
						: encryptor.decrypt(argument);
				System.out.println("OK " + Base64.getEncoder().encodeToString(result.getBytes(StandardCharsets.UTF_8)));
			}
			catch (RuntimeException e) {
				System.out.println("ERR " + e.getClass().getName());
			}
			System.out.flush();
		}
	}

}

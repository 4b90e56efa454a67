package com.example.greeter;

import java.util.List;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RestController;

/** A service that registers with Eureka (here: Ferry) and lists what discovery returns. */
@SpringBootApplication
@RestController
public class GreeterApplication {

    private final DiscoveryClient discovery;

    public GreeterApplication(DiscoveryClient discovery) {
        this.discovery = discovery;
    }

    public static void main(String[] args) {
        SpringApplication.run(GreeterApplication.class, args);
    }

    @GetMapping("/hello")
    public String hello() {
        return "hello from greeter\n";
    }

    /** What a Spring Cloud load-balanced client would choose from for {@code service}. */
    @GetMapping("/discover/{service}")
    public List<String> discover(@PathVariable String service) {
        return discovery.getInstances(service).stream()
                .map(ServiceInstance::getUri)
                .map(Object::toString)
                .toList();
    }
}

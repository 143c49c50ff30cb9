package dev.classcache.demo.web;

import java.net.URI;
import java.util.List;

import jakarta.validation.Valid;

import org.springframework.http.ResponseEntity;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PostMapping;
import org.springframework.web.bind.annotation.RequestBody;
import org.springframework.web.bind.annotation.RequestMapping;
import org.springframework.web.bind.annotation.RestController;

import dev.classcache.demo.owner.ClinicService;
import dev.classcache.demo.owner.OwnerRequest;
import dev.classcache.demo.owner.OwnerView;

@RestController
@RequestMapping("/api/owners")
public class OwnerController {

	private final ClinicService clinic;

	public OwnerController(ClinicService clinic) {
		this.clinic = clinic;
	}

	@GetMapping
	public List<OwnerView> list() {
		return this.clinic.findOwners();
	}

	@GetMapping("/{id}")
	public OwnerView get(@PathVariable Long id) {
		return this.clinic.findOwner(id);
	}

	@PostMapping
	public ResponseEntity<OwnerView> create(@Valid @RequestBody OwnerRequest request) {
		OwnerView created = this.clinic.createOwner(request);
		return ResponseEntity.created(URI.create("/api/owners/" + created.id())).body(created);
	}

}

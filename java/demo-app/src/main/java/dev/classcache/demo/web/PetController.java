package dev.classcache.demo.web;

import java.util.List;

import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RequestMapping;
import org.springframework.web.bind.annotation.RestController;

import dev.classcache.demo.owner.ClinicService;
import dev.classcache.demo.owner.VisitView;

@RestController
@RequestMapping("/api/pets")
public class PetController {

	private final ClinicService clinic;

	public PetController(ClinicService clinic) {
		this.clinic = clinic;
	}

	@GetMapping("/{id}/visits")
	public List<VisitView> visits(@PathVariable Long id) {
		return this.clinic.findVisits(id);
	}

}

package dev.classcache.demo.owner;

import java.util.List;

import org.springframework.stereotype.Service;
import org.springframework.transaction.annotation.Transactional;

@Service
@Transactional(readOnly = true)
public class ClinicService {

	private final OwnerRepository owners;

	private final PetRepository pets;

	private final VisitRepository visits;

	public ClinicService(OwnerRepository owners, PetRepository pets, VisitRepository visits) {
		this.owners = owners;
		this.pets = pets;
		this.visits = visits;
	}

	public List<OwnerView> findOwners() {
		return this.owners.findAllByOrderByLastNameAscFirstNameAsc().stream().map(OwnerView::of).toList();
	}

	public OwnerView findOwner(Long id) {
		return this.owners.findWithPetsById(id).map(OwnerView::of).orElseThrow(() -> new NotFoundException("Owner", id));
	}

	@Transactional
	public OwnerView createOwner(OwnerRequest request) {
		Owner owner = new Owner(request.firstName().trim(), request.lastName().trim(), request.address().trim(),
				request.city().trim(), request.telephone());
		return OwnerView.of(this.owners.save(owner));
	}

	public List<VisitView> findVisits(Long petId) {
		if (!this.pets.existsById(petId)) {
			throw new NotFoundException("Pet", petId);
		}
		return this.visits.findByPetIdOrderByDateDesc(petId).stream().map(VisitView::of).toList();
	}

}

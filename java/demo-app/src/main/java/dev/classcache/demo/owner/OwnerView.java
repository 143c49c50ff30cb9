package dev.classcache.demo.owner;

import java.util.List;

public record OwnerView(Long id, String firstName, String lastName, String address, String city, String telephone,
		List<PetView> pets) {

	static OwnerView of(Owner owner) {
		return new OwnerView(owner.getId(), owner.getFirstName(), owner.getLastName(), owner.getAddress(),
				owner.getCity(), owner.getTelephone(), owner.getPets().stream().map(PetView::of).toList());
	}

}

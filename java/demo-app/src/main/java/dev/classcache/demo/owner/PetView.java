package dev.classcache.demo.owner;

import java.time.LocalDate;

public record PetView(Long id, String name, String type, LocalDate birthDate) {

	static PetView of(Pet pet) {
		return new PetView(pet.getId(), pet.getName(), pet.getType(), pet.getBirthDate());
	}

}
